"""Mask R-CNN (He et al., "Mask R-CNN", 2017) on torchvision's components: FPN and C4 designs, many backbones."""

from __future__ import annotations

from instaseg.models.common.rcnn import ANCHOR_KEYS, RPN_CANDIDATES
from instaseg.models.detector import Architecture
from instaseg.models.maskrcnn.build import build
from instaseg.models.maskrcnn.published import PUBLISHED
from instaseg.models.maskrcnn.recipe import DEFAULTS, RECIPE_DEFAULTS, validate

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="maskrcnn_fast",
    recipe_defaults=RECIPE_DEFAULTS,
    anchor_keys=ANCHOR_KEYS,
    candidate_keys=RPN_CANDIDATES,
    published=PUBLISHED,
)
