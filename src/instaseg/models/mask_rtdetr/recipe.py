"""Mask-RT-DETR's model section and published recipe: every key a mask_rtdetr recipe may set, with its default, and
its value rules.

A recipe's ``model.backbone`` names a size (``hgnetv2_s`` .. ``hgnetv2_h`` as published, ``hgnetv2_nano`` a
narrow one of our own for CPUs) whose published encoder settings fill every ``null`` key below.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.common.rules import (
    check_choice,
    check_fraction,
    check_non_negative,
    check_positive,
    check_weights,
    is_positive_int,
    key_error,
)
from instaseg.models.mask_rtdetr.backbone import ARCHS
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS

# size -> backbone arch, encoder width, decoder width, encoder level (0..2: stride 8..32), encoder layers, encoder
# ffn, CSP expansion, mask feature channels, prototypes; as PaddleDetection's configs/mask_rtdetr/*.yml (and
# PaddleX's Mask-RT-DETR-*.yaml, whose model sections are the same) set them. X and H widen the hybrid encoder
# (384, 512) but keep the transformer decoder at the global hidden_dim 256, which projects the encoder's levels
# down to 256 first.
SIZES: dict[str, tuple[str, int, int, int, int, int, float, list[int], int]] = {
    "hgnetv2_nano": ("nano", 64, 64, 2, 1, 128, 0.5, [32, 32], 32),
    "hgnetv2_s": ("S", 256, 256, 1, 1, 1024, 0.5, [64, 32], 128),
    "hgnetv2_m": ("M", 256, 256, 1, 1, 1024, 0.5, [64, 64], 128),
    "hgnetv2_l": ("L", 256, 256, 2, 1, 1024, 1.0, [64, 64], 32),
    "hgnetv2_x": ("X", 384, 256, 2, 1, 2048, 1.0, [128, 128], 128),
    "hgnetv2_h": ("H", 512, 256, 2, 2, 2048, 1.0, [256, 128], 128),
}
PRESET_KEYS = ("arch", "hidden_dim", "decoder_dim", "encoder_level", "encoder_layers", "encoder_ffn", "expansion",
               "mask_feat_channels", "num_prototypes")  # fmt: skip

DEFAULTS: dict[str, Any] = {
    "architecture": "mask_rtdetr",
    "backbone": "hgnetv2_l",
    "weights": "none",  # none | imagenet (PP-HGNetV2) | coco | a published name | PATH
    "coco_weights": None,
    "norm": "frozen_bn",  # backbone BatchNorm: frozen_bn (pretrained, as published) | bn (from scratch)
    "arch": None,  # null: from the backbone size
    "hidden_dim": None,  # the hybrid encoder's width
    "decoder_dim": None,  # the transformer decoder's width (queries, heads, prototype coefficients)
    "encoder_level": None,  # which of the strides 8, 16, 32 gets self-attention
    "encoder_layers": None,
    "encoder_ffn": None,
    "expansion": None,  # CSP hidden width / hidden_dim
    "mask_feat_channels": None,  # [inner, output] channels of the mask feature FPN
    "num_prototypes": None,  # the per-pixel mask embedding (stride 4) the queries are dotted with
    "csp_blocks": 3,  # RepVGG blocks per CSP layer
    "num_queries": 300,
    "decoder_layers": 6,
    "decoder_heads": 8,
    "decoder_ffn": 1024,
    "decoder_points": 4,  # deformable samples per head and level
    "mask_enhanced": True,  # initial reference boxes from the selected queries' masks
    "num_denoising": 100,  # denoising queries in training (0: none)
    "label_noise_ratio": 0.5,
    "box_noise_scale": 1.0,
    "num_sample_points": 12544,  # points per mask in the matching cost and the mask losses
    "loss_class_weight": 4.0,  # varifocal, IoU-aware
    "loss_bbox_weight": 5.0,  # L1
    "loss_giou_weight": 2.0,
    "loss_mask_weight": 5.0,  # BCE on points
    "loss_dice_weight": 5.0,
    # resize and normalise: float (normalise, resize in float: torchvision's) | uint8_bilinear | uint8_bicubic (the
    # uint8 picture resized by OpenCV first, as PaddleDetection's Resize, interp 2; see instaseg.utils.resize_rule)
    "resize_order": "float",
    # the float32 arithmetic of the normalisation: unit ((v / 255 - mean) / std: torchvision's) | pixel ((v - 255 mean)
    # / (255 std): MMDetection's) | paddle (v x float32(1 / 255), then mean and std in float64: PaddleDetection's
    # NormalizeImage); see instaseg.utils.normalisation
    "normalisation": "unit",
}


def resolved_model_section(cfg: dict) -> dict:
    """The model section with the size preset filling the keys left null."""
    cfg = {**DEFAULTS, **cfg}
    preset = dict(zip(PRESET_KEYS, SIZES[cfg["backbone"]], strict=True))
    return {**cfg, **{k: v for k, v in preset.items() if cfg[k] is None}}


LOSS_TERMS = ("class", "bbox", "giou", "mask", "dice")
# PaddleX's COCO models and the PP-HGNetV2 ImageNet backbones of the published configs (published.py)
DOWNLOADS: tuple[str, ...] = ("imagenet", "coco")


def _check_sizes(cfg: dict, bad) -> None:
    sizes = ("hidden_dim", "decoder_dim", "encoder_ffn", "num_prototypes")
    check_positive(cfg, bad, sizes, integer=True, nullable=True)
    check_positive(cfg, bad, ("csp_blocks", "num_queries", "decoder_layers", "decoder_heads", "decoder_ffn",
                              "decoder_points", "num_sample_points"), integer=True)  # fmt: skip
    for key in ("encoder_layers", "num_denoising"):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 0):
            raise bad(key, "must be a non-negative integer")
    if cfg["encoder_level"] is not None and cfg["encoder_level"] not in (0, 1, 2):
        raise bad("encoder_level", "must be 0, 1 or 2 (stride 8, 16 or 32) or null")
    if cfg["expansion"] is not None and (isinstance(cfg["expansion"], bool) or not 0 < cfg["expansion"] <= 4):
        raise bad("expansion", "must be in (0, 4] or null")
    feat = cfg["mask_feat_channels"]
    if feat is not None and not (isinstance(feat, list) and len(feat) == 2 and all(is_positive_int(c) for c in feat)):
        raise bad("mask_feat_channels", "must be [inner, output] positive channel counts or null")
    resolved = resolved_model_section(cfg)
    if resolved["hidden_dim"] % 8:  # the encoder's 8 heads and the 4 sine-cosine quarters
        raise bad("hidden_dim", "must be a multiple of 8")
    if resolved["decoder_dim"] % cfg["decoder_heads"]:
        raise bad("decoder_dim", f"must be a multiple of model.decoder_heads ({cfg['decoder_heads']})")


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete mask_rtdetr model section."""
    bad = key_error(cfg, source)
    check_choice(cfg, bad, "resize_order", RESIZE_ORDERS)
    check_choice(cfg, bad, "normalisation", NORMALISATIONS)
    check_choice(cfg, bad, "backbone", SIZES)
    check_choice(cfg, bad, "arch", ARCHS, nullable=True)
    _check_sizes(cfg, bad)
    check_choice(cfg, bad, "norm", ("bn", "frozen_bn"))
    check_fraction(cfg, bad, ("label_noise_ratio",), closed_low=True)
    check_non_negative(cfg, bad, ("box_noise_scale", *(f"loss_{k}_weight" for k in LOSS_TERMS)))
    check_weights(cfg, bad, DOWNLOADS, "mask_rtdetr")


# The published 6x recipe, PaddleDetection's configs/mask_rtdetr/mask_rtdetr_hgnetv2_*_6x_coco.yml (with
# _base_/optimizer_6x.yml, _base_/mask_rtdetr_reader.yml, _base_/mask_rtdetr_r50vd.yml); `instaseg models NAME
# --published` shows a recipe beside it. The backbone's lr multiplier differs per size: in each recipe file.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 640, "max_size": 640, "resize": "stretch"},  # Resize 640 x 640, keep_ratio: false
    "train": {
        "epochs": 72,
        "batch_size": 4,  # per GPU
        "base_batch": 16,  # 4 GPUs x 4 images (the README's training command)
        "optimizer": "adamw",
        "lr": 0.0001,
        "weight_decay": 0.0001,
        "decay_norms_and_biases": True,  # Paddle's AdamW decays every parameter (regularizer: false)
        "lr_schedule": "multistep",  # PiecewiseDecay gamma 1.0 at epoch 100: constant after the warmup
        "milestones": [100],
        "gamma": 1.0,
        "warmup_iters": 2000,
        "warmup_start": 0.001,
        "ema": True,
        "ema_decay": 0.9999,
        "ema_ramp": "exponential",  # ema_decay_type: exponential
        "early_stop_patience": None,
        "photometric": "distort",  # RandomDistort prob 0.8
        "photometric_prob": 0.8,
        "zoom_out": 0.5,  # RandomExpand (ratio 4, half the images)
        "zoom_out_max": 4.0,
        "iou_crop": 0.8,  # RandomCrop prob 0.8
        "hflip": True,
        "scale_jitter": None,
        # BatchRandomResize: one square side per batch, 640 three times as likely as the others
        "batch_multiscale": [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800],
        "grad_clip": 0.1,
        "sync_bn": True,  # norm_type: sync_bn
    },
    "eval": {"score_threshold": 0.0, "max_dets": 100},  # DETRPostProcess: the 100 best queries, no score cut
    "published": {
        "differences": {
            "model.weights": "the recipe starts from random weights unless asked: --weights imagenet loads the "
            "published start (PP-HGNetV2 SSLD ImageNet weights), --weights coco PaddleX's COCO model",
            "resize interpolation": "training stretches the uint8 picture bilinearly with torchvision, then each "
            "batch in float (the reference: a random one of five OpenCV interpolations on uint8); the predictor, "
            "every exported backend and the eager model resize as the reference evaluates where the recipe sets "
            "model.resize_order: uint8_bicubic (mask_rtdetr_s to _h), else bilinearly in float",
            "batch resize": "samples are stretched to 640 in the data workers, then each batch to its drawn size: "
            "two resamplings where the reference makes one (a batch's size is unknown while its samples load)",
        }
    },
}
