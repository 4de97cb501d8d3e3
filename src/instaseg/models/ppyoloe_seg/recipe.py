"""PP-YOLOE-seg's model section and published recipe: every key a ppyoloe_seg recipe may set, with its default, and
its value rules.

A recipe's ``model.backbone`` names a size (``cspresnet_s``, ``_m``, ``_l``, ``_x``) whose published depth and
width multipliers fill ``deepen`` and ``widen`` when those are null; a recipe may set them explicitly.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.common.rules import (
    check_choice,
    check_fraction,
    check_frozen_stages,
    check_non_negative,
    check_positive,
    check_weights,
    key_error,
)

# size -> (depth multiplier, width multiplier), as PaddleDetection's ppyoloe+ configs set them
SIZES: dict[str, tuple[float, float]] = {
    "cspresnet_s": (0.33, 0.50),
    "cspresnet_m": (0.67, 0.75),
    "cspresnet_l": (1.0, 1.0),
    "cspresnet_x": (1.33, 1.25),
}

DEFAULTS: dict[str, Any] = {
    "architecture": "ppyoloe_seg",
    "backbone": "cspresnet_s",
    "weights": "none",  # none | PATH
    "frozen_stages": 1,  # stem + this many backbone stages get no gradient when starting from a weights PATH
    "coco_weights": None,
    "deepen": None,  # null: from the backbone size
    "widen": None,
    "use_alpha": True,  # a learned scale on the RepVGG 1x1 branch (PP-YOLOE+)
    "reg_max": 16,  # box sides as distributions over 0..reg_max strides
    "num_masks": 32,  # prototypes, and coefficients per point
    "assigner_topk": 13,  # task-aligned assignment
    "assigner_alpha": 1.0,
    "assigner_beta": 6.0,
    # ATSS for this many training steps first (the model counts them itself, in a buffer saved with checkpoints);
    # 0: task-aligned from the start, as PaddleX's PP-YOLOE_seg-S (static_assigner_epoch: -1)
    "static_assigner_steps": 0,
    "loss_cls_weight": 1.0,  # varifocal
    "loss_iou_weight": 2.5,  # GIoU
    "loss_dfl_weight": 0.5,  # distribution focal
    "loss_mask_weight": 2.5,  # BCE; the published head weighs it with the IoU weight
    "nms_pre": 1000,
    "nms_iou": 0.7,
}


def resolved_model_section(cfg: dict) -> dict:
    """The model section with the size preset filling ``deepen`` and ``widen`` where null."""
    cfg = {**DEFAULTS, **cfg}
    deepen, widen = SIZES[cfg["backbone"]]
    return {**cfg, "deepen": cfg["deepen"] or deepen, "widen": cfg["widen"] or widen}

# PaddleX's PP-YOLOE_seg-S recipe: 640 x 640, SGD (momentum 0.9, L2 5e-4) at base lr 0.001 for its batch of 8
# per card, 5 warmup epochs, cosine decay planned over 96 epochs and stopped at 80 (where the cosine stands at
# 0.067 of the base: flat_cosine's floor here), EMA 0.9998. Its RandomDistort / RandomExpand / RandomCrop /
# RandomFlip become photometric jitter, scale jitter and horizontal flips.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 640, "max_size": 640},
    "train": {
        "epochs": 80,
        "batch_size": 8,
        "optimizer": "sgd",
        "lr": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "lr_schedule": "flat_cosine",
        "min_lr_ratio": 0.067,
        "warmup_iters": 9000,  # 5 epochs of COCO train2017 at 64 images per step
        "ema": True,
        "ema_decay": 0.9998,
        "early_stop_patience": None,
        "scale_jitter": [0.5, 1.5],
        "photometric": True,
        "hflip": True,
        "grad_clip": None,
    },
}
# no pretrained CSPResNet weights are fetched
DOWNLOADS: tuple[str, ...] = ()


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete ppyoloe_seg model section."""
    bad = key_error(cfg, source)
    check_choice(cfg, bad, "backbone", SIZES)
    check_positive(cfg, bad, ("deepen", "widen"), nullable=True)
    check_positive(cfg, bad, ("reg_max", "num_masks", "assigner_topk", "nms_pre"))
    check_non_negative(cfg, bad, ("assigner_alpha", "assigner_beta", "static_assigner_steps"))
    check_non_negative(cfg, bad, ("loss_cls_weight", "loss_iou_weight", "loss_dfl_weight", "loss_mask_weight"))
    check_fraction(cfg, bad, ("nms_iou",))
    check_frozen_stages(cfg, bad)
    check_weights(cfg, bad, DOWNLOADS, "ppyoloe_seg")
