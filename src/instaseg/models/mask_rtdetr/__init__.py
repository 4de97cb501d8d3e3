"""Mask-RT-DETR (PaddleDetection's instance segmentation version of RT-DETR, Lv et al., "DETRs Beat YOLOs on
Real-time Object Detection", 2023, with MaskDINO's mask branch): query-based and NMS-free. A PP-HGNetV2
backbone, a hybrid encoder (attention within one level, CNN fusion across levels, 128 mask prototypes at stride
4 in most sizes), IoU-aware query selection with mask-enhanced initial boxes, a deformable-attention decoder
trained with Hungarian matching and denoising queries; the best 100 (query, class) pairs are the detections."""

from __future__ import annotations

from instaseg.models.detector import Architecture
from instaseg.models.mask_rtdetr.build import build
from instaseg.models.mask_rtdetr.published import PUBLISHED
from instaseg.models.mask_rtdetr.recipe import DEFAULTS, RECIPE_DEFAULTS, validate

__all__ = ["ARCHITECTURE"]

ARCHITECTURE = Architecture(
    build=build,
    model_defaults=DEFAULTS,
    validate=validate,
    small_recipe="mask_rtdetr_fast",
    candidate_keys={"num_queries": 1.0},  # one query per object: at least as many queries as detections
    tiny_overrides=(
        # 96 px pictures: 189 tokens over the three levels; fewer queries and points, a shallower decoder
        "model.num_queries=100",
        "model.decoder_layers=3",
        "model.num_denoising=30",
        "model.num_sample_points=576",
    ),
    recipe_defaults=RECIPE_DEFAULTS,
    published=PUBLISHED,
)
