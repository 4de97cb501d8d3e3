"""PP-YOLOE-seg (PaddleDetection's PPYOLOEInsHead on PP-YOLOE+, as PaddleX ships PP-YOLOE_seg-S): the anchor-free
one-stage detector of Xu et al. 2022 ("PP-YOLOE: An evolved version of YOLO") with YOLACT-style masks (Bolya et
al. 2019), written in plain PyTorch.

CSPResNet backbone with effective squeeze-excitation, CustomCSPPAN neck, ET-head (ESE stems; varifocal
classification, box sides as distributions with DFL plus GIoU); 32 prototypes at stride 4 from the stride-8 map
and 32 coefficients per point, mask = sigmoid(coefficients x prototypes) cut to the box, BCE inside the box."""

from __future__ import annotations

from instaseg.models.detector import Architecture
from instaseg.models.ppyoloe_seg.build import build
from instaseg.models.ppyoloe_seg.published import PUBLISHED
from instaseg.models.ppyoloe_seg.recipe import DEFAULTS, RECIPE_DEFAULTS, validate

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="ppyoloe_seg_fast",
    candidate_keys={"nms_pre": 2.0},  # boxes of a class into NMS, as a multiple of eval.max_dets
    recipe_defaults=RECIPE_DEFAULTS,
    published=PUBLISHED,
)
