"""RTMDet-Ins (Lyu et al., "RTMDet: An Empirical Study of Designing Real-Time Object Detectors", 2022): the
real-time one-stage instance segmentation model, written in plain PyTorch."""

from __future__ import annotations

from instaseg.models.detector import Architecture
from instaseg.models.rtmdet_ins.build import build
from instaseg.models.rtmdet_ins.published import PUBLISHED
from instaseg.models.rtmdet_ins.recipe import DEFAULTS, RECIPE_DEFAULTS, validate

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="rtmdet_ins_tiny_fast",
    candidate_keys={"nms_pre": 2.0},  # boxes into NMS, as a multiple of eval.max_dets
    recipe_defaults=RECIPE_DEFAULTS,
    published=PUBLISHED,
)
