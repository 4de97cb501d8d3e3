"""Cascade Mask R-CNN (Cai & Vasconcelos, "Cascade R-CNN: High Quality Object Detection and Instance
Segmentation", 2018/2019): Mask R-CNN's backbone, FPN and RPN, then three box stages trained at rising IoU
(0.5 / 0.6 / 0.7), each refining the previous stage's boxes, and a mask head on the final boxes."""

from __future__ import annotations

from instaseg.models.cascade.build import build
from instaseg.models.cascade.published import PUBLISHED
from instaseg.models.cascade.recipe import DEFAULTS, RECIPE_DEFAULTS, validate
from instaseg.models.common.rcnn import ANCHOR_KEYS, RPN_CANDIDATES
from instaseg.models.detector import Architecture

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="cascade_maskrcnn_fast",
    recipe_defaults=RECIPE_DEFAULTS,
    anchor_keys=ANCHOR_KEYS,
    candidate_keys=RPN_CANDIDATES,
    published=PUBLISHED,
)
