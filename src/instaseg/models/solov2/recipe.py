"""SOLOv2's model section and published recipe: every key a solov2 recipe may set, with its default, and its value
rules. The model section's defaults are the published R50-FPN (mmdetection's solov2_r50_fpn_1x_coco,
PaddleDetection's solov2_r50_fpn.yml); `RECIPE_DEFAULTS` holds the published 3x multi-scale schedule.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.common.backbones import check_backbone_and_norm
from instaseg.models.common.mask_resample import MASK_RESAMPLES
from instaseg.models.common.rules import (
    check_choice,
    check_fraction,
    check_frozen_stages,
    check_positive,
    check_weights,
    is_positive_int,
    key_error,
)
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS

DEFAULTS: dict[str, Any] = {
    "architecture": "solov2",
    "backbone": "resnet50",
    "weights": "imagenet",  # none | imagenet | coco (MMDetection's, published.py) | a published name | PATH
    "coco_weights": None,  # no torchvision COCO weights exist for SOLOv2
    "norm": "frozen_bn",  # backbone BatchNorm: frozen_bn (pretrained) | bn (from scratch)
    "frozen_stages": 1,  # stem + this many stages get no gradient when the backbone starts pretrained
    "fpn_channels": 256,  # P2..P5 plus a max-pooled P6
    "num_grids": [40, 36, 24, 16, 12],  # S per level (P2..P6)
    "scale_ranges": [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]],  # sqrt(box area), input pixels
    "center_sigma": 0.2,  # the centre region: the box scaled by this about the mask's centre of mass
    "head_channels": 512,  # category and kernel towers
    "stacked_convs": 4,
    "kernel_channels": 256,  # dynamic 1x1 kernel size = channels of the unified mask feature
    "mask_feat_channels": 128,  # inside the mask feature head
    "gn_groups": 32,  # GroupNorm groups in the heads
    # mask logits = kernel_scale x (kernel . mask feature). 1 as published; 1/sqrt(kernel_channels) bounds how far
    # one optimizer step moves every logit at once (AdamW from scratch otherwise saturates all masks in a step)
    "kernel_scale": 1.0,
    "soft_mask_targets": False,  # true: mask targets are the share of each stride-4 cell covered (not >= 0.5)
    "loss_cls_weight": 1.0,  # focal loss
    "focal_gamma": 2.0,
    "focal_alpha": 0.25,
    "loss_mask_weight": 3.0,  # Dice
    "cls_score_thr": 0.1,  # category score a cell needs to become a candidate (eval.score_threshold is the final cut)
    "mask_thr": 0.5,
    # masks are computed for the best max_candidates (cell, class) pairs above cls_score_thr; after maskness
    # rescoring the best nms_pre go into Matrix NMS and eval.max_dets come out. The published code computes masks
    # for every pair above cls_score_thr (no cap) and takes nms_pre after rescoring: the cap only bounds memory
    "max_candidates": 2000,
    "nms_pre": 500,
    "nms_kernel": "gaussian",  # gaussian | linear
    "nms_sigma": 2.0,
    # resize and normalise: float (normalise, resize in float: torchvision's) | float_opencv_bilinear (normalise,
    # resize in float by OpenCV: PaddleDetection's SOLOv2 EvalReader) | uint8_bilinear | uint8_bicubic (the uint8
    # picture resized by OpenCV first, as MMDetection's and PaddleDetection's Resize; instaseg.utils.resize_rule)
    "resize_order": "float",
    # the float32 arithmetic of the normalisation: unit ((v / 255 - mean) / std: torchvision's) | pixel ((v - 255 mean)
    # / (255 std): MMDetection's DetDataPreprocessor) | paddle (PaddleDetection's NormalizeImage); see
    # instaseg.utils.normalisation
    "normalisation": "unit",
    # how the stride-4 mask probabilities reach the original picture: direct (one bilinear step, exact) | two_step
    # (MMDetection's: upsampled x4 to the padded input, cut, resized to the original; masks not cut to their boxes)
    # | canvas_rescale (instaseg.models.common.mask_resample)
    "mask_resample": "direct",
}
DOWNLOADS = ("imagenet", "coco")  # COCO: MMDetection's R50 models (published.py)


def _check_levels(cfg: dict, bad) -> None:
    grids, ranges = cfg["num_grids"], cfg["scale_ranges"]
    if len(grids) != 5 or not all(is_positive_int(s) for s in grids):
        raise bad("num_grids", "must be five positive grid sizes, one per level P2..P6")
    if len(ranges) != 5 or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r) and 0 <= r[0] < r[1]
        for r in ranges
    ):
        raise bad("scale_ranges", "must be five [low, high] pairs with 0 <= low < high, one per level")


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete solov2 model section (types are checked against DEFAULTS by the config)."""
    bad = key_error(cfg, source)
    check_choice(cfg, bad, "resize_order", RESIZE_ORDERS)
    check_choice(cfg, bad, "normalisation", NORMALISATIONS)
    check_choice(cfg, bad, "mask_resample", MASK_RESAMPLES)
    check_backbone_and_norm(cfg, bad)
    _check_levels(cfg, bad)
    sizes = ("fpn_channels", "head_channels", "stacked_convs", "kernel_channels", "mask_feat_channels", "gn_groups")
    check_positive(cfg, bad, (*sizes, "nms_pre", "max_candidates"), integer=True)
    for key in ("head_channels", "kernel_channels", "mask_feat_channels"):
        if cfg[key] % cfg["gn_groups"]:
            raise bad(key, f"must be a multiple of model.gn_groups ({cfg['gn_groups']})")
    check_positive(cfg, bad, ("kernel_scale", "nms_sigma"))
    check_fraction(cfg, bad, ("center_sigma",))
    check_fraction(cfg, bad, ("cls_score_thr", "mask_thr"), closed_low=True, closed_high=False)
    check_choice(cfg, bad, "nms_kernel", ("gaussian", "linear"))
    check_frozen_stages(cfg, bad)
    check_weights(cfg, bad, DOWNLOADS, "solov2")


# The published 3x multi-scale recipe, mmdetection 3.3's configs/solov2/solov2_r50_fpn_ms-3x_coco.py (with
# solov2_r50_fpn_1x_coco.py and its schedule_1x base); `instaseg models solov2_r50_fpn --published` shows the recipe
# beside it.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 800, "max_size": 1333},
    "train": {
        "epochs": 36,
        "batch_size": 2,  # per GPU
        "base_batch": 16,  # 8 GPUs x 2 images
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "lr_schedule": "multistep",
        "milestones": [27, 33],
        "gamma": 0.1,
        "warmup_iters": 500,
        "warmup_start": 0.3333333333333333,  # LinearLR start_factor 1/3
        "ema": False,
        "early_stop_patience": None,
        "scale_jitter": None,
        "multiscale": [640, 672, 704, 736, 768, 800],  # RandomChoiceResize, longer side at most 1333
        "hflip": True,
        "photometric": False,
        "grad_clip": 35.0,
    },
}
