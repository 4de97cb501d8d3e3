"""RTMDet-Ins's model section and published recipe: every key a rtmdet_ins recipe may set, with its default, and
its value rules.

A recipe's ``model.backbone`` names a size (``cspnext_tiny``, ``_s``, ``_m``, ``_l``, ``_x``) whose published depth
and width multipliers, neck width and CSP depth fill every ``null`` key below; a recipe may set them explicitly.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.common.mask_resample import MASK_RESAMPLES
from instaseg.models.common.rules import (
    check_choice,
    check_fraction,
    check_frozen_stages,
    check_positive,
    check_weights,
    key_error,
)
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS

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
    "weights": "none",  # none | imagenet (CSPNeXt) | coco | a published name | PATH
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
    # MMDetection's pipeline pads every picture to a max_size square with grey 114 (training and test), and boxes
    # are clipped to that canvas before NMS; false: pad to a multiple of 32 only (cheaper for wide pictures)
    "pad_to_square": True,
    "pad_value": 114 / 255,  # the padding's pixel value on [0, 1]
    # resize and normalise: float (normalise, resize in float: torchvision's) | uint8_bilinear | uint8_bicubic (the
    # uint8 picture resized by OpenCV first, as MMDetection's Resize; see instaseg.utils.resize_rule)
    "resize_order": "float",
    # the float32 arithmetic of the normalisation: unit ((v / 255 - mean) / std: torchvision's) | pixel ((v - 255 mean)
    # / (255 std): MMDetection's DetDataPreprocessor) | paddle (PaddleDetection's NormalizeImage); see
    # instaseg.utils.normalisation
    "normalisation": "unit",
    # how the stride-8 mask logits reach the original picture: direct (one bilinear step, exact) | canvas_rescale
    # (MMDetection's predict_by_feat(rescale=True): the padded canvas resized by the scale factors, width's and
    # height's swapped, then cut; instaseg.models.common.mask_resample) | two_step
    "mask_resample": "direct",
}


def resolved_model_section(cfg: dict) -> dict:
    """The model section with the size preset filling the keys left null."""
    cfg = {**DEFAULTS, **cfg}
    deepen, widen, channels, blocks = SIZES[cfg["backbone"]]
    preset = {"deepen": deepen, "widen": widen, "neck_channels": channels, "neck_blocks": blocks}
    preset["feat_channels"] = cfg["neck_channels"] or channels
    return {**cfg, **{k: v for k, v in preset.items() if cfg[k] is None}}

# The published 300-epoch recipe, mmdetection 3.3's configs/rtmdet/rtmdet-ins_s_8xb32-300e_coco.py (the l config and
# its rtmdet_l base hold the schedule); the tiny, l, m and x recipes state where their configs differ. `instaseg
# models NAME --published` shows a recipe beside its config.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 640, "max_size": 640},
    "train": {
        "epochs": 300,
        "batch_size": 32,  # per GPU
        "base_batch": 256,  # 8 GPUs x 32 images
        "optimizer": "adamw",
        "lr": 0.004,
        "weight_decay": 0.05,
        "decay_norms_and_biases": False,  # norm_decay_mult 0, bias_decay_mult 0
        "lr_schedule": "flat_cosine",  # CosineAnnealingLR from epoch 150 to 300
        "min_lr_ratio": 0.05,
        "warmup_iters": 1000,
        "warmup_start": 0.00001,
        "ema": True,
        "ema_decay": 0.9998,  # ExpMomentumEMA momentum 0.0002
        "ema_ramp": "exponential",
        "early_stop_patience": None,
        "scale_jitter": [0.5, 2.0],  # RandomResize ratio_range
        "photometric": "hsv",  # YOLOXHSVRandomAug, every image
        "photometric_prob": 1.0,
        "mosaic": True,
        "mixup": True,
        "mixup_prob": 1.0,
        "mosaic_until": 280 / 300,  # PipelineSwitchHook at epoch 280 of 300
        "grad_clip": None,
        "sync_bn": True,  # SyncBN in backbone, neck and head
    },
    "published": {
        "differences": {
            "sample caches": "Mosaic keeps the 20 most recent samples and MixUp 10, dropping the oldest (the "
            "reference's tiny config does the same; the others keep 40 and 20 and drop one at random): each data "
            "worker holds its own cache",
            "mixup partner": "the cached partner is blended as it was cached, at the top-left corner; the reference "
            "flips it at random and places it at a random offset",
            "resize padding": "the light stage pads a zoomed-out image with 0 (the reference: 114 grey); after the "
            "normalisation both are a flat border",
        }
    },
}
# MMDetection's COCO models and CSPNeXt ImageNet backbones (published.py)
DOWNLOADS: tuple[str, ...] = ("imagenet", "coco")


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete rtmdet_ins model section."""
    bad = key_error(cfg, source)
    check_choice(cfg, bad, "resize_order", RESIZE_ORDERS)
    check_choice(cfg, bad, "normalisation", NORMALISATIONS)
    check_choice(cfg, bad, "mask_resample", MASK_RESAMPLES)
    check_choice(cfg, bad, "backbone", SIZES)
    check_positive(cfg, bad, ("deepen", "widen", "neck_channels", "neck_blocks", "feat_channels"), nullable=True)
    check_positive(
        cfg, bad, ("stacked_convs", "num_prototypes", "dyconv_channels", "mask_loss_stride", "assigner_topk", "nms_pre")
    )
    if cfg["num_dyconvs"] < 2:
        raise bad("num_dyconvs", "must be at least 2")
    if 8 % cfg["mask_loss_stride"]:
        raise bad("mask_loss_stride", "must divide the prototype stride 8 (1, 2, 4 or 8)")
    check_fraction(cfg, bad, ("nms_iou",))
    check_fraction(cfg, bad, ("pad_value",), closed_low=True)
    check_frozen_stages(cfg, bad)
    check_weights(cfg, bad, DOWNLOADS, "rtmdet_ins")
