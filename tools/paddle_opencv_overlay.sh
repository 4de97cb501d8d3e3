#!/usr/bin/env bash
# A folder to put in front of the PaddleDetection reference environment's path (PYTHONPATH=DIR) so that its
# pre-processing runs with instaseg's OpenCV: PaddleDetection's Resize (cv2.INTER_CUBIC on the uint8 picture) then
# gives our bytes, and "each side's own pre-processing" compares implementations, not OpenCV versions (4.6, which
# the environment pins, and 5.1 round a few bicubic values differently). OpenCV wheels after 4.11 need NumPy 2;
# imgaug, which PaddleDetection's data transforms import, reads np.sctypes, which NumPy 2 removed: a
# sitecustomize.py in the folder puts it back. Nothing of PaddleDetection is changed.
#
#   bash tools/paddle_opencv_overlay.sh /tmp/paddle_cv
#   PYTHONPATH=/tmp/paddle_cv /work/ref/paddle/venv/bin/python tools/paddle_rcnn_full/ref_dump_rcnn.py ...
set -euo pipefail
OUT=${1:?usage: bash tools/paddle_opencv_overlay.sh DIR}
PADDLE_PYTHON=${PADDLE_PYTHON:-/work/ref/paddle/venv/bin/python}
OPENCV=$(python3 -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))")
"$PADDLE_PYTHON" -m pip install -q --target "$OUT" "numpy==2.2.6" "opencv-python-headless==$OPENCV"
cat > "$OUT/sitecustomize.py" <<'PY'
# imgaug (imported by PaddleDetection's data transforms) reads np.sctypes, which NumPy 2 removed
import numpy as np

try:
    np.sctypes
except AttributeError:
    np.sctypes = {
        "int": [np.int8, np.int16, np.int32, np.int64],
        "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
        "float": [np.float16, np.float32, np.float64],
        "complex": [np.complex64, np.complex128],
        "others": [bool, object, bytes, str, np.void],
    }
PY
PYTHONPATH="$OUT" "$PADDLE_PYTHON" -c "import cv2, numpy; print('overlay ready: OpenCV', cv2.__version__, 'NumPy', numpy.__version__)"
