"""Cascade Mask R-CNN (Cai & Vasconcelos, "Cascade R-CNN: High Quality Object Detection and Instance
Segmentation", 2018/2019): Mask R-CNN's backbone, FPN and RPN, then three box stages trained at rising IoU
(0.5 / 0.6 / 0.7), each refining the previous stage's boxes, and a mask head on the final boxes.

The published 1x recipe (PaddleDetection's cascade_mask_rcnn_r50_fpn_1x_coco: SGD 0.01 for 8 images, warmup, 12
epochs at 800 x 1333) is instaseg's default recipe at 2 images per step, so there are no recipe defaults of its
own. No COCO-trained cascade is published for torchvision; see the recipes for which weights to bring.
"""

from __future__ import annotations

from instaseg.models.cascade.build import DEFAULTS, RPN_CANDIDATES, build_cascade_maskrcnn, validate_model_section
from instaseg.models.cascade.model import CascadeMaskRCNN
from instaseg.models.detector import Architecture

__all__ = ["ARCHITECTURE", "DEFAULTS", "CascadeMaskRCNN", "build_cascade_maskrcnn", "validate_model_section"]

ARCHITECTURE = Architecture(
    build=build_cascade_maskrcnn,
    model_defaults=DEFAULTS,
    validate=validate_model_section,
    small_recipe="cascade_maskrcnn_fast",
    anchor_keys=("anchor_sizes", "aspect_ratios"),
    candidate_keys=RPN_CANDIDATES,
)
