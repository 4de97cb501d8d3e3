"""PP-YOLOE-seg (PaddleDetection's PPYOLOEInsHead on PP-YOLOE+, as PaddleX ships PP-YOLOE_seg-S): the anchor-free
one-stage detector of Xu et al. 2022 ("PP-YOLOE: An evolved version of YOLO") with YOLACT-style masks (Bolya et
al. 2019), written in plain PyTorch.

CSPResNet backbone with effective squeeze-excitation, CustomCSPPAN neck, ET-head (ESE stems; varifocal
classification, box sides as distributions with DFL plus GIoU); 32 prototypes at stride 4 from the stride-8 map
and 32 coefficients per point, mask = sigmoid(coefficients x prototypes) cut to the box, BCE inside the box.

A recipe's ``model.backbone`` names a size (``cspresnet_s``, ``_m``, ``_l``, ``_x``) whose published depth and
width multipliers fill ``deepen`` and ``widen`` when those are null; a recipe may set them explicitly.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.backbones import no_pretrained_weights
from instaseg.models.detector import Architecture, key_error
from instaseg.models.recipes import inference_settings

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
    "weights": "none",  # none | PATH (no pretrained CSPResNet weights are fetched)
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


def build_ppyoloe_seg(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False):
    """PPYOLOESeg for `num_classes` foreground classes, randomly initialised."""
    from instaseg.models.ppyoloe_seg.model import PPYOLOESeg

    if download_backbone:
        raise no_pretrained_weights("CSPResNet")
    cfg = resolved_model_section(recipe["model"])
    test_cfg = inference_settings(recipe, cfg)
    model = PPYOLOESeg(num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)
    if freeze:
        model.freeze(int(cfg["frozen_stages"]))
    return model


def validate_model_section(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete ppyoloe_seg model section."""
    bad = key_error(cfg, source)

    if cfg["backbone"] not in SIZES:
        raise bad("backbone", f"must be one of {', '.join(SIZES)}")
    for key in ("deepen", "widen"):
        value = cfg[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise bad(key, "must be a positive number or null")
    for key in ("reg_max", "num_masks", "assigner_topk", "nms_pre"):
        if cfg[key] <= 0:
            raise bad(key, "must be positive")
    for key in ("assigner_alpha", "assigner_beta", "static_assigner_steps"):
        if cfg[key] < 0:
            raise bad(key, "must not be negative")
    for key in ("loss_cls_weight", "loss_iou_weight", "loss_dfl_weight", "loss_mask_weight"):
        if cfg[key] < 0:
            raise bad(key, "must not be negative")
    if not 0 < cfg["nms_iou"] <= 1:
        raise bad("nms_iou", "must be in (0, 1]")
    if cfg["frozen_stages"] < -1 or cfg["frozen_stages"] > 4:
        raise bad("frozen_stages", "must be -1 (nothing frozen) to 4")
    if str(cfg["weights"]).lower() in ("imagenet", "coco"):
        raise bad("weights", "has no published download for ppyoloe_seg here; use none or a checkpoint PATH")


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

ARCHITECTURE = Architecture(
    build=build_ppyoloe_seg,
    model_defaults=DEFAULTS,
    validate=validate_model_section,
    small_recipe="ppyoloe_seg_fast",
    candidate_keys={"nms_pre": 2.0},  # boxes into NMS, as a multiple of eval.max_dets
    recipe_defaults=RECIPE_DEFAULTS,
)
