"""RTMDet-Ins assembled from a recipe: the size preset resolved, the score cut and NMS settings taken from it."""

from __future__ import annotations

from instaseg.models.common.rules import inference_settings, no_pretrained_weights
from instaseg.models.rtmdet_ins.model import RTMDetIns
from instaseg.models.rtmdet_ins.recipe import resolved_model_section


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> RTMDetIns:
    """RTMDetIns for `num_classes` foreground classes, randomly initialised."""
    if download_backbone:
        raise no_pretrained_weights("CSPNeXt")
    cfg = resolved_model_section(recipe["model"])
    test_cfg = inference_settings(recipe, cfg)
    model = RTMDetIns(num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
    if freeze:
        model.backbone.freeze(int(cfg["frozen_stages"]))
    return model
