"""SOLOv2 (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", NeurIPS 2020): segmenting objects by
location. Each cell of an S x S grid on each pyramid level predicts a class and a dynamic 1x1 kernel; the kernel,
applied to one shared stride-4 mask feature, gives that cell's object mask over the whole image, so masks are not
cut to a box-relative grid. Matrix NMS removes duplicates in one matrix product.

The model section's defaults are the published R50-FPN (mmdetection's solov2_r50_fpn_1x_coco, PaddleDetection's
solov2_r50_fpn.yml); `RECIPE_DEFAULTS` holds the published 3x multi-scale schedule.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.detector import Architecture, key_error

DEFAULTS: dict[str, Any] = {
    "architecture": "solov2",
    "backbone": "resnet50",
    "weights": "imagenet",  # none | imagenet | PATH
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
    "nms_pre": 500,  # candidates into Matrix NMS; eval.max_dets come out
    "nms_kernel": "gaussian",  # gaussian | linear
    "nms_sigma": 2.0,
}


def build_solov2(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False):
    """SOLOv2 for ``num_classes`` foreground classes, randomly initialised unless the backbone is."""
    from instaseg.models.backbones import FeaturePyramidBackbone, build_feature_body, freeze_stages
    from instaseg.models.solov2.inference import TestConfig
    from instaseg.models.solov2.model import SOLOv2

    cfg = {**DEFAULTS, **recipe["model"]}
    body, info = build_feature_body(cfg["backbone"], cfg["norm"], download_backbone)
    if freeze:
        freeze_stages(body, info.stage_prefixes, int(cfg["frozen_stages"]))
    backbone = FeaturePyramidBackbone(body, info, [2, 3, 4, 5], int(cfg["fpn_channels"]), extra_pool=True)
    test_cfg = TestConfig(
        cls_score_thr=float(cfg["cls_score_thr"]),
        mask_thr=float(cfg["mask_thr"]),
        nms_pre=int(cfg["nms_pre"]),
        nms_kernel=str(cfg["nms_kernel"]),
        nms_sigma=float(cfg["nms_sigma"]),
        score_threshold=float(recipe["eval"]["score_threshold"]),
        max_dets=int(recipe["eval"]["max_dets"]),
    )
    return SOLOv2(backbone, num_classes, cfg, recipe["input"]["min_size"], recipe["input"]["max_size"], test_cfg)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_levels(cfg: dict, bad) -> None:
    grids, ranges = cfg["num_grids"], cfg["scale_ranges"]
    if len(grids) != 5 or not all(_positive_int(s) for s in grids):
        raise bad("num_grids", "must be five positive grid sizes, one per level P2..P6")
    if len(ranges) != 5 or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r) and 0 <= r[0] < r[1]
        for r in ranges
    ):
        raise bad("scale_ranges", "must be five [low, high] pairs with 0 <= low < high, one per level")


def validate_model_section(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete solov2 model section (types are checked against DEFAULTS by the config)."""
    from instaseg.models.backbones import check_backbone_and_norm

    bad = key_error(cfg, source)

    check_backbone_and_norm(cfg, bad)
    _check_levels(cfg, bad)
    for key in ("fpn_channels", "head_channels", "stacked_convs", "kernel_channels", "mask_feat_channels",
                "gn_groups", "nms_pre"):  # fmt: skip
        if not _positive_int(cfg[key]):
            raise bad(key, "must be a positive integer")
    for key in ("head_channels", "kernel_channels", "mask_feat_channels"):
        if cfg[key] % cfg["gn_groups"]:
            raise bad(key, f"must be a multiple of model.gn_groups ({cfg['gn_groups']})")
    if cfg["kernel_scale"] <= 0:
        raise bad("kernel_scale", "must be positive")
    if not 0 < cfg["center_sigma"] <= 1:
        raise bad("center_sigma", "must be in (0, 1]")
    for key in ("cls_score_thr", "mask_thr"):
        if not 0 <= cfg[key] < 1:
            raise bad(key, "must be in [0, 1)")
    if cfg["nms_kernel"] not in ("gaussian", "linear"):
        raise bad("nms_kernel", "must be gaussian or linear")
    if cfg["nms_sigma"] <= 0:
        raise bad("nms_sigma", "must be positive")
    if cfg["frozen_stages"] < -1 or cfg["frozen_stages"] > 4:
        raise bad("frozen_stages", "must be -1 (nothing frozen) to 4")
    if not isinstance(cfg["weights"], str) or not cfg["weights"] or cfg["weights"].lower() == "coco":
        raise bad("weights", "must be none, imagenet or a checkpoint path (no COCO download exists for solov2)")


# The published 3x schedule (mmdetection solov2_r50_fpn_ms-3x_coco, PaddleDetection solov2_r50_fpn_3x_coco):
# SGD lr 0.01 for 16 images (0.00125 at 2 per step, the linear-scaling rule), momentum 0.9, weight decay 1e-4,
# linear warmup, 36 epochs, multi-scale training (short side 640..800, here as scale jitter 0.8..1.0 of 800),
# horizontal flip only, gradient clipping at 35 (mmdetection), no EMA.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "input": {"min_size": 800, "max_size": 1333},
    "train": {
        "epochs": 36,
        "batch_size": 2,
        "optimizer": "sgd",
        "lr": 0.00125,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "warmup_iters": 500,
        "lr_schedule": "plateau",
        "ema": False,
        "early_stop_patience": None,
        "scale_jitter": [0.8, 1.0],
        "photometric": False,
        "grad_clip": 35.0,
    },
}

ARCHITECTURE = Architecture(
    build=build_solov2,
    model_defaults=DEFAULTS,
    validate=validate_model_section,
    small_recipe="solov2_fast",
    candidate_keys={"nms_pre": 2.0},  # boxes into NMS, as a multiple of eval.max_dets
    tiny_overrides=(
        # the conformance suite's 96 px pictures hold 12-30 px shapes: ranges and grids scaled to that size
        "model.scale_ranges=[[1, 16], [8, 32], [16, 64], [32, 128], [64, 256]]",
        "model.num_grids=[12, 10, 8, 6, 4]",
    ),
    recipe_defaults=RECIPE_DEFAULTS,
)
