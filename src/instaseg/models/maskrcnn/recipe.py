"""Mask R-CNN's model section: every key a maskrcnn recipe may set, with its default, and its value rules.

The shared R-CNN keys (`instaseg.models.common.rcnn.RCNN_DEFAULTS`: torchvision's maskrcnn_resnet50_fpn values) plus
the FPN/C4 choice and the head shapes; a recipe states only what differs. `RECIPE_DEFAULTS` is the published 1x
recipe (PaddleDetection's configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml); recipes that follow another config say so.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from instaseg.errors import UserError
from instaseg.models.common.rcnn import RCNN_DEFAULTS, check_rcnn_section
from instaseg.models.common.rcnn_recipe import RCNN_1X, RCNN_1X_DIFFERENCES
from instaseg.models.common.rules import check_choice, check_weights, key_error

DEFAULTS: dict[str, Any] = {
    "architecture": "maskrcnn",
    **RCNN_DEFAULTS,
    "fpn": True,  # false: Detectron2's C4 design (one stride-16 map, res5 as the box head)
    "fpn_norm": None,  # None | bn
    "rpn_conv_depth": 1,
    "box_head": "mlp",  # mlp (two fc layers) | conv (conv_layers then one fc, torchvision's v2)
    "box_conv_layers": [256, 256, 256, 256],  # for box_head: conv
    "head_norm": None,  # None | bn: normalisation in the conv box head and the mask head
}
DOWNLOADS = ("imagenet", "coco")


def norm_layer(name: str | None, key: str) -> type[nn.Module] | None:
    """The normalisation a ``*_norm`` key names: null (none) or bn."""
    if name in (None, "none"):
        return None
    if name == "bn":
        return nn.BatchNorm2d
    raise UserError(f"unknown normalisation {name!r}; use null or bn", record=f"model.{key}")


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete maskrcnn model section (types are checked against DEFAULTS by the config)."""
    bad = key_error(cfg, source)
    check_rcnn_section(cfg, bad)
    for key in ("fpn_norm", "head_norm"):
        norm_layer(cfg[key], key)
    check_choice(cfg, bad, "box_head", ("mlp", "conv"))
    if not cfg["fpn"] and cfg["box_head"] != "mlp":
        raise bad("box_head", "is the res5 stage in the C4 design; leave it at mlp")
    check_weights(cfg, bad, DOWNLOADS, "maskrcnn")



RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": RCNN_1X,
    "published": {"differences": RCNN_1X_DIFFERENCES},
}
