"""INT8 export's defaults, in a module of their own so the command line states them without importing torch."""

DEFAULT_CALIB_SIZE = 100  # calibration images INT8 quantization takes from the calibration source
DEFAULT_MAX_AP_DROP = 1.0  # mask AP points (0-100) that INT8 may lose against the fp32 export
DEFAULT_VAL_IMAGES = 50  # validation images INT8 accuracy control measures mask AP on
