"""RTMDet-Ins (Lyu et al., "RTMDet: An Empirical Study of Designing Real-Time Object Detectors", 2022): the
real-time one-stage instance segmentation model, written in plain PyTorch.

A recipe's ``model.backbone`` names a size (``cspnext_tiny``, ``_s``, ``_m``, ``_l``, ``_x``) whose published depth
and width multipliers, neck width and CSP depth fill every ``null`` key below; a recipe may set them explicitly.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.backbones import no_pretrained_weights
from instaseg.models.detector import Architecture, key_error
from instaseg.models.recipes import inference_settings

# size -> (deepen, widen, neck/head channels, neck CSP blocks), as the published configs set them
SIZES: dict[str, tuple[float, float, int, int]] = {
    "cspnext_tiny": (0.167, 0.375, 96, 1),
    "cspnext_s": (0.33, 0.5, 128, 1),
    "cspnext_m": (0.67, 0.75, 192, 2),
    "cspnext_l": (1.0, 1.0, 256, 3),
    "cspnext_x": (1.33, 1.25, 320, 4),
}

DEFAULTS: dict[str, Any] = {
    "architecture": "rtmdet_ins",
    "backbone": "cspnext_s",
    "weights": "none",  # none | PATH (no pretrained CSPNeXt weights are fetched)
    "frozen_stages": 1,  # stem + this many backbone stages get no gradient when starting from a weights PATH
    "coco_weights": None,
    "deepen": None,  # null: from the backbone size
    "widen": None,
    "neck_channels": None,
    "neck_blocks": None,
    "feat_channels": None,  # head width; null: the neck's
    "stacked_convs": 2,
    "num_prototypes": 8,
    "dyconv_channels": 8,
    "num_dyconvs": 3,
    "mask_loss_stride": 4,
    "assigner_topk": 13,
    "loss_cls_weight": 1.0,  # quality focal loss
    "loss_box_weight": 2.0,  # GIoU
    "loss_mask_weight": 2.0,  # Dice
    "nms_pre": 1000,
    "nms_iou": 0.6,
}


def resolved_model_section(cfg: dict) -> dict:
    """The model section with the size preset filling the keys left null."""
    cfg = {**DEFAULTS, **cfg}
    deepen, widen, channels, blocks = SIZES[cfg["backbone"]]
    preset = {"deepen": deepen, "widen": widen, "neck_channels": channels, "neck_blocks": blocks}
    preset["feat_channels"] = cfg["neck_channels"] or channels
    return {**cfg, **{k: v for k, v in preset.items() if cfg[k] is None}}


def build_rtmdet_ins(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False):
    """RTMDetIns for `num_classes` foreground classes, randomly initialised."""
    from instaseg.models.rtmdet_ins.model import RTMDetIns

    if download_backbone:
        raise no_pretrained_weights("CSPNeXt")
    cfg = resolved_model_section(recipe["model"])
    test_cfg = inference_settings(recipe, cfg)
    model = RTMDetIns(num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
    if freeze:
        model.freeze(int(cfg["frozen_stages"]))
    return model


def validate_model_section(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete rtmdet_ins model section."""

    bad = key_error(cfg, source)

    if cfg["backbone"] not in SIZES:
        raise bad("backbone", f"must be one of {', '.join(SIZES)}")
    for key in ("deepen", "widen", "neck_channels", "neck_blocks", "feat_channels"):
        value = cfg[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise bad(key, "must be a positive number or null")
    for key in ("stacked_convs", "num_prototypes", "dyconv_channels", "mask_loss_stride", "assigner_topk", "nms_pre"):
        if cfg[key] <= 0:
            raise bad(key, "must be positive")
    if cfg["num_dyconvs"] < 2:
        raise bad("num_dyconvs", "must be at least 2")
    if 8 % cfg["mask_loss_stride"]:
        raise bad("mask_loss_stride", "must divide the prototype stride 8 (1, 2, 4 or 8)")
    if not 0 < cfg["nms_iou"] <= 1:
        raise bad("nms_iou", "must be in (0, 1]")
    if cfg["frozen_stages"] < -1 or cfg["frozen_stages"] > 4:
        raise bad("frozen_stages", "must be -1 (nothing frozen) to 4")
    if str(cfg["weights"]).lower() in ("imagenet", "coco"):
        raise bad("weights", "has no published download for rtmdet_ins here; use none or a checkpoint PATH")


# The published 300-epoch recipe (mmdetection's rtmdet-ins_*_8xb32-300e_coco): 640 px, AdamW, warmup then
# flat-cosine, EMA, Mosaic + MixUp with large-scale jitter switched to the light pipeline for the last 20 epochs.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 640, "max_size": 640},
    "train": {
        "epochs": 300,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 0.004,
        "weight_decay": 0.05,
        "lr_schedule": "flat_cosine",
        "min_lr_ratio": 0.05,
        "warmup_iters": 1000,
        "ema": True,
        "ema_decay": 0.9998,
        "early_stop_patience": None,
        "scale_jitter": [0.5, 2.0],
        "mosaic": True,
        "mixup": True,
        "mosaic_until": 0.933,
        "grad_clip": None,
    },
}

ARCHITECTURE = Architecture(
    build=build_rtmdet_ins,
    model_defaults=DEFAULTS,
    validate=validate_model_section,
    small_recipe="rtmdet_ins_tiny_fast",
    candidate_keys={"nms_pre": 2.0},  # boxes into NMS, as a multiple of eval.max_dets
    recipe_defaults=RECIPE_DEFAULTS,
)
