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
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS

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
    "weights": "none",  # none | imagenet (the published Objects365 start) | coco | a published name | PATH
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
    "nms_pre": 1000,  # candidates per class into NMS (PaddleDetection's nms_top_k)
    "nms_iou": 0.7,
    # resize and normalise: float (normalise, resize in float: torchvision's) | uint8_bilinear | uint8_bicubic (the
    # uint8 picture resized by OpenCV first, as PaddleDetection's Resize, interp 2; see instaseg.utils.resize_rule)
    "resize_order": "float",
    # the float32 arithmetic of the normalisation: unit ((v / 255 - mean) / std: torchvision's) | pixel ((v - 255 mean)
    # / (255 std): MMDetection's) | paddle (v x float32(1 / 255), then mean and std in float64: PaddleDetection's
    # NormalizeImage); see instaseg.utils.normalisation
    "normalisation": "unit",
    # how the stride-4 mask probabilities reach the original picture: direct (one bilinear step, cut at the box in
    # original pixels) | two_step (PaddleDetection's process_mask_upsample then rescale: x4 to the input, cut at the
    # box's input pixels, resized to the original); instaseg.models.common.mask_resample
    "mask_resample": "direct",
}


def resolved_model_section(cfg: dict) -> dict:
    """The model section with the size preset filling ``deepen`` and ``widen`` where null."""
    cfg = {**DEFAULTS, **cfg}
    deepen, widen = SIZES[cfg["backbone"]]
    return {**cfg, "deepen": cfg["deepen"] or deepen, "widen": cfg["widen"] or widen}

# The published 80-epoch recipe, PaddleDetection's configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml (with
# _base_/optimizer_80e.yml, _base_/ppyoloe_plus_seg_reader.yml, _base_/ppyoloe_plus_crn_seg.yml; PaddleX's
# PP-YOLOE_seg-S model config holds the same numbers); `instaseg models ppyoloe_seg_s --published` shows the
# recipe beside it.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 640, "max_size": 640, "resize": "stretch"},  # Resize 640 x 640, keep_ratio: false
    "train": {
        "epochs": 80,
        "batch_size": 8,  # per GPU
        "base_batch": 64,  # 8 GPUs x 8 images (PP-YOLOE's README: trained on 8 GPUs)
        "optimizer": "sgd",
        "lr": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.0005,  # L2 regularizer
        "lr_schedule": "cosine",  # CosineDecay over 96 epochs, of which 80 are trained
        "cosine_epochs": 96,
        "min_lr_ratio": 0.0,
        "warmup_epochs": 5,  # LinearWarmup epochs 5, start_factor 0
        "warmup_start": 0.0,
        "ema": True,
        "ema_decay": 0.9998,
        "ema_ramp": "threshold",
        "early_stop_patience": None,
        "photometric": "distort",  # RandomDistort
        "photometric_prob": 1.0,
        "zoom_out": 0.5,  # RandomExpand (ratio 4, half the images)
        "zoom_out_max": 4.0,
        "iou_crop": 1.0,  # RandomCrop
        "hflip": True,
        "scale_jitter": None,
        "grad_clip": None,
        "sync_bn": True,  # norm_type: sync_bn
    },
    "eval": {"score_threshold": 0.01, "max_dets": 300},  # MultiClassNMS score_threshold 0.01, keep_top_k 300
    "published": {
        "differences": {
            "model.weights": "the recipe starts from random weights unless asked: --weights imagenet loads the "
            "published start (PP-YOLOE+ s trained on Objects365), --weights coco PaddleX's COCO model",
            "resize interpolation": "training's data pipeline resizes the uint8 picture bilinearly with "
            "torchvision (the reference: OpenCV bicubic on uint8); the predictor, every exported backend and the "
            "eager model resize as the reference evaluates where the recipe sets model.resize_order: uint8_bicubic "
            "(ppyoloe_seg_s), else bilinearly in float",
            "ema_black_list": "every weight is averaged; the reference keeps the fixed DFL projection out of the EMA "
            "(it is not trained, so its average is itself)",
        }
    },
}
# PaddleX's COCO model and the Objects365 PP-YOLOE+ detector the published config starts from (published.py)
DOWNLOADS: tuple[str, ...] = ("imagenet", "coco")


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete ppyoloe_seg model section."""
    bad = key_error(cfg, source)
    check_choice(cfg, bad, "resize_order", RESIZE_ORDERS)
    check_choice(cfg, bad, "normalisation", NORMALISATIONS)
    check_choice(cfg, bad, "mask_resample", ("direct", "two_step"))
    check_choice(cfg, bad, "backbone", SIZES)
    check_positive(cfg, bad, ("deepen", "widen"), nullable=True)
    check_positive(cfg, bad, ("reg_max", "num_masks", "assigner_topk", "nms_pre"))
    check_non_negative(cfg, bad, ("assigner_alpha", "assigner_beta", "static_assigner_steps"))
    check_non_negative(cfg, bad, ("loss_cls_weight", "loss_iou_weight", "loss_dfl_weight", "loss_mask_weight"))
    check_fraction(cfg, bad, ("nms_iou",))
    check_frozen_stages(cfg, bad)
    check_weights(cfg, bad, DOWNLOADS, "ppyoloe_seg")
