"""Mask R-CNN (He et al., "Mask R-CNN", 2017) on torchvision's components: FPN and C4 designs, many backbones.

The recipe defaults are the documented recipe of `instaseg.config.DEFAULTS` (SGD, warmup then plateau, EMA).
"""

from __future__ import annotations

from instaseg.models.detector import Architecture
from instaseg.models.maskrcnn.build import DEFAULTS, RPN_CANDIDATES, build_maskrcnn, validate_model_section
from instaseg.models.maskrcnn.model import MaskRCNNDetector

__all__ = ["ARCHITECTURE", "DEFAULTS", "MaskRCNNDetector", "build_maskrcnn", "validate_model_section"]

ARCHITECTURE = Architecture(
    build=build_maskrcnn,
    model_defaults=DEFAULTS,
    validate=validate_model_section,
    small_recipe="maskrcnn_fast",
    anchor_keys=("anchor_sizes", "aspect_ratios"),
    candidate_keys=RPN_CANDIDATES,
)
