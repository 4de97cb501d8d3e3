"""Mask-RT-DETR assembled from a recipe: the size preset resolved, the score cut and detections taken from it."""

from __future__ import annotations

from instaseg.models.common.rules import inference_settings, no_pretrained_weights
from instaseg.models.mask_rtdetr.model import MaskRTDETR
from instaseg.models.mask_rtdetr.recipe import resolved_model_section


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> MaskRTDETR:
    """MaskRTDETR for ``num_classes`` foreground classes, randomly initialised."""
    if download_backbone:
        raise no_pretrained_weights("PP-HGNetV2")
    cfg = resolved_model_section(recipe["model"])
    test_cfg = inference_settings(recipe)
    model = MaskRTDETR(num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
    if freeze:
        model.backbone.freeze_stem()
    return model
