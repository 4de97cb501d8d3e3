"""PP-YOLOE-seg assembled from a recipe: the size preset resolved, the score cut and NMS settings taken from it."""

from __future__ import annotations

from instaseg.models.common.rules import inference_settings, no_pretrained_weights
from instaseg.models.ppyoloe_seg.model import PPYOLOESeg
from instaseg.models.ppyoloe_seg.recipe import resolved_model_section


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> PPYOLOESeg:
    """PPYOLOESeg for `num_classes` foreground classes, randomly initialised."""
    if download_backbone:
        raise no_pretrained_weights("CSPResNet")
    cfg = resolved_model_section(recipe["model"])
    test_cfg = inference_settings(recipe, cfg)
    model = PPYOLOESeg(num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
    if freeze:
        model.backbone.freeze(int(cfg["frozen_stages"]))
    return model
