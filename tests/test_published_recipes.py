"""Every published recipe against the published config it follows, training number by training number.

The numbers below were read from the configs themselves (with their _BASE_ / _base_ files):
- PaddleDetection, github.com/PaddlePaddle/PaddleDetection at commit 666f597fd00d3157e84dd9fb2dd3f40bf9918ebc;
- mmdetection 3.3.0 (release tag v3.3.0; the PyPI wheel mmdet-3.3.0 carries the configs as mmdet/.mim/configs).
Each table names its config's path. A recipe value may differ from a published one only where the recipe says why
(``published.differences``), and the differences left are pinned here so none appears unnoticed.
"""

from __future__ import annotations

import pytest

from instaseg.config import list_recipes
from instaseg.models.published import compare, published_config, same_value
from instaseg.models.recipes import load_recipe

PADDLE = ("PaddlePaddle/PaddleDetection", "666f597fd00d3157e84dd9fb2dd3f40bf9918ebc")
MMDET = ("open-mmlab/mmdetection", "v3.3.0 (mmdet 3.3.0 on PyPI)")

# configs/mask_rtdetr/_base_/optimizer_6x.yml: epoch 72; base_lr 0.0001; PiecewiseDecay gamma 1.0 milestones [100];
# LinearWarmup start_factor 0.001 steps 2000; clip_grad_by_norm 0.1; AdamW weight_decay 0.0001, regularizer false.
# _base_/mask_rtdetr_reader.yml: RandomDistort prob 0.8, RandomExpand, RandomCrop prob 0.8, RandomFlip;
# BatchRandomResize [480 .. 800] keep_ratio false; batch_size 4; Resize 640 x 640 keep_ratio false at evaluation.
# _base_/mask_rtdetr_r50vd.yml: use_ema, ema_decay 0.9999, ema_decay_type exponential, norm_type sync_bn,
# DETRPostProcess num_top_queries 100. The size config: PPHGNetV2 freeze_norm true, lr_mult_list, pretrain_weights.
# README: trained with paddle.distributed.launch --gpus 0,1,2,3 (4 GPUs x 4 images).
MASK_RTDETR_6X = {
    "input.min_size": 640, "input.max_size": 640, "input.resize": "stretch",
    "train.epochs": 72, "train.batch_size": 4, "train.base_batch": 16, "train.optimizer": "adamw",
    "train.lr": 0.0001, "train.weight_decay": 0.0001, "train.decay_norms_and_biases": True,
    "train.lr_schedule": "multistep", "train.milestones": [100], "train.gamma": 1.0,
    "train.warmup_iters": 2000, "train.warmup_start": 0.001, "train.grad_clip": 0.1,
    "train.ema": True, "train.ema_decay": 0.9999, "train.ema_ramp": "exponential", "train.sync_bn": True,
    "train.photometric": "distort", "train.photometric_prob": 0.8, "train.zoom_out": 0.5, "train.zoom_out_max": 4.0,
    "train.iou_crop": 0.8, "train.hflip": True, "train.scale_jitter": None, "train.multiscale": None,
    "train.batch_multiscale": [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800],
    "train.mosaic": False, "train.mixup": False, "train.early_stop_patience": None,
    "model.weights": "imagenet", "model.norm": "frozen_bn", "eval.score_threshold": 0.0, "eval.max_dets": 100,
}  # fmt: skip
MASK_RTDETR_SETTINGS = {"resize interpolation", "batch resize"}

# configs/mask_rcnn/_base_/optimizer_1x.yml (and cascade_rcnn/_base_/optimizer_1x.yml, which adds clip_grad_by_norm
# 35.0): epoch 12; base_lr 0.01; PiecewiseDecay gamma 0.1 milestones [8, 11]; LinearWarmup start_factor 0.001 steps
# 1000; Momentum 0.9; L2 0.0001. _base_/mask_fpn_reader.yml: RandomResize [[640, 1333] .. [800, 1333]] keep_ratio,
# RandomFlip 0.5, batch_size 1; Resize [800, 1333] at evaluation. BBoxPostProcess keep_top_k 100, score 0.05.
RCNN_1X = {
    "input.min_size": 800, "input.max_size": 1333, "input.resize": "keep_ratio",
    "train.epochs": 12, "train.batch_size": 1, "train.base_batch": 8, "train.optimizer": "sgd", "train.lr": 0.01,
    "train.momentum": 0.9, "train.weight_decay": 0.0001, "train.decay_norms_and_biases": None,
    "train.lr_schedule": "multistep", "train.milestones": [8, 11], "train.gamma": 0.1, "train.warmup_iters": 1000,
    "train.warmup_start": 0.001, "train.grad_clip": None, "train.ema": False, "train.sync_bn": False,
    "train.photometric": False, "train.zoom_out": 0.0, "train.iou_crop": 0.0, "train.hflip": True,
    "train.scale_jitter": None, "train.multiscale": [640, 672, 704, 736, 768, 800], "train.batch_multiscale": None,
    "train.mosaic": False, "train.mixup": False, "train.early_stop_patience": None, "train.backbone_lr_mult": 1.0,
    "model.weights": "imagenet", "eval.score_threshold": 0.05, "eval.max_dets": 100,
}  # fmt: skip

# configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml with _base_/optimizer_80e.yml (epoch 80; base_lr 0.001;
# CosineDecay max_epochs 96; LinearWarmup start_factor 0 epochs 5; Momentum 0.9; L2 0.0005),
# _base_/ppyoloe_plus_seg_reader.yml (RandomDistort, RandomExpand fill the mean, RandomCrop is_mask_crop, RandomFlip,
# Resize 640 x 640 keep_ratio false; batch_size 8) and _base_/ppyoloe_plus_crn_seg.yml (use_ema, ema_decay 0.9998,
# norm_type sync_bn, static_assigner_epoch -1, MultiClassNMS nms_top_k 1000, keep_top_k 300, score_threshold 0.01,
# nms_threshold 0.7). configs/ppyoloe/README.md: PP-YOLOE used 8 GPUs.
PPYOLOE_SEG_S = {
    "input.min_size": 640, "input.max_size": 640, "input.resize": "stretch",
    "train.epochs": 80, "train.batch_size": 8, "train.base_batch": 64, "train.optimizer": "sgd", "train.lr": 0.001,
    "train.momentum": 0.9, "train.weight_decay": 0.0005, "train.decay_norms_and_biases": None,
    "train.lr_schedule": "cosine", "train.cosine_epochs": 96, "train.min_lr_ratio": 0.0, "train.warmup_epochs": 5,
    "train.warmup_start": 0.0, "train.grad_clip": None, "train.ema": True, "train.ema_decay": 0.9998,
    "train.ema_ramp": "threshold", "train.sync_bn": True, "train.photometric": "distort",
    "train.photometric_prob": 1.0, "train.zoom_out": 0.5, "train.zoom_out_max": 4.0, "train.iou_crop": 1.0,
    "train.hflip": True, "train.scale_jitter": None, "train.multiscale": None, "train.batch_multiscale": None,
    "train.mosaic": False, "train.mixup": False, "train.early_stop_patience": None, "train.backbone_lr_mult": 1.0,
    "model.weights": "objects365", "model.static_assigner_steps": 0, "model.nms_pre": 1000, "model.nms_iou": 0.7,
    "eval.score_threshold": 0.01, "eval.max_dets": 300,
}  # fmt: skip

# configs/rtmdet/rtmdet_l_8xb32-300e_coco.py: max_epochs 300, base_lr 0.004, AdamW weight_decay 0.05 with
# norm_decay_mult 0 and bias_decay_mult 0, LinearLR start_factor 1e-5 over 1000 iterations, CosineAnnealingLR from
# epoch 150 to 300 with eta_min base_lr x 0.05, batch_size 32, EMAHook ExpMomentumEMA momentum 0.0002,
# PipelineSwitchHook at 280, SyncBN. rtmdet-ins_l_8xb32-300e_coco.py: CachedMosaic, RandomResize (1280, 1280)
# ratio_range (0.1, 2.0), RandomCrop 640, YOLOXHSVRandomAug, RandomFlip 0.5, CachedMixUp, test_cfg nms_pre 1000,
# score_thr 0.05, nms 0.6, max_per_img 100. The s config: ratio_range (0.5, 2.0); tiny (from s): CachedMixUp prob
# 0.5; x (from l): base_lr 0.002, 8 GPUs x 16 (its name).
RTMDET_INS = {
    "input.min_size": 640, "input.max_size": 640, "input.resize": "keep_ratio",
    "train.epochs": 300, "train.batch_size": 32, "train.base_batch": 256, "train.optimizer": "adamw",
    "train.lr": 0.004, "train.weight_decay": 0.05, "train.decay_norms_and_biases": False,
    "train.lr_schedule": "flat_cosine", "train.min_lr_ratio": 0.05, "train.warmup_iters": 1000,
    "train.warmup_start": 0.00001, "train.grad_clip": None, "train.ema": True, "train.ema_decay": 0.9998,
    "train.ema_ramp": "exponential", "train.sync_bn": True, "train.mosaic": True, "train.mixup": True,
    "train.mixup_prob": 1.0, "train.mosaic_until": 280 / 300, "train.scale_jitter": [0.5, 2.0],
    "train.photometric": "hsv", "train.photometric_prob": 1.0, "train.hflip": True, "train.multiscale": None,
    "train.batch_multiscale": None, "train.zoom_out": 0.0, "train.iou_crop": 0.0, "train.early_stop_patience": None,
    "train.backbone_lr_mult": 1.0, "model.weights": "imagenet", "model.nms_pre": 1000, "model.nms_iou": 0.6,
    "eval.score_threshold": 0.05, "eval.max_dets": 100,
}  # fmt: skip
RTMDET_SETTINGS = {"sample caches", "resize padding", "mixup partner"}

# configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py with _base_/schedules/schedule_1x.py (12 epochs; SGD lr 0.02,
# momentum 0.9, weight_decay 0.0001; LinearLR start_factor 0.001 over 500 iterations; MultiStepLR [8, 11];
# auto_scale_lr base_batch_size 16) and _base_/datasets/coco_instance.py (Resize (1333, 800) keep_ratio,
# RandomFlip 0.5, batch_size 2); test_cfg rcnn score_thr 0.05, max_per_img 100.
MMDET_RCNN_1X = {
    "input.min_size": 800, "input.max_size": 1333, "input.resize": "keep_ratio",
    "train.epochs": 12, "train.batch_size": 2, "train.base_batch": 16, "train.optimizer": "sgd", "train.lr": 0.02,
    "train.momentum": 0.9, "train.weight_decay": 0.0001, "train.decay_norms_and_biases": None,
    "train.lr_schedule": "multistep", "train.milestones": [8, 11], "train.gamma": 0.1, "train.warmup_iters": 500,
    "train.warmup_start": 0.001, "train.grad_clip": None, "train.ema": False, "train.sync_bn": False,
    "train.photometric": False, "train.zoom_out": 0.0, "train.iou_crop": 0.0, "train.hflip": True,
    "train.scale_jitter": None, "train.multiscale": None, "train.batch_multiscale": None, "train.mosaic": False,
    "train.mixup": False, "train.early_stop_patience": None, "train.backbone_lr_mult": 1.0,
    "model.weights": "imagenet", "eval.score_threshold": 0.05, "eval.max_dets": 100,
}  # fmt: skip

# recipe -> (source, config path, the published numbers, differing recipe keys, published settings without a key)
PUBLISHED = {
    **{
        f"mask_rtdetr_{size}": (PADDLE, f"configs/mask_rtdetr/mask_rtdetr_hgnetv2_{size}_6x_coco.yml",
                                {**MASK_RTDETR_6X, "train.backbone_lr_mult": mult}, {"model.weights"},
                                MASK_RTDETR_SETTINGS)
        for size, mult in (("s", 0.1), ("m", 0.1), ("l", 0.05), ("x", 0.01), ("h", 0.01))
    },
    "ppyoloe_seg_s": (PADDLE, "configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml", PPYOLOE_SEG_S, {"model.weights"},
                      {"resize interpolation", "ema_black_list"}),
    "maskrcnn_r50_fpn": (PADDLE, "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml", RCNN_1X, set(),
                         {"resize interpolation"}),
    "maskrcnn_r50_fpn_paddlex": (PADDLE, "configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml", RCNN_1X, set(),
                                 {"resize interpolation"}),
    # configs/solov2/solov2_r50_fpn_1x_coco.yml: optimizer_1x.yml (LinearWarmup start_factor 0.), solov2_reader.yml
    # (batch_size 2, Resize [800, 1333]), SOLOv2Head score_threshold 0.1 mask_threshold 0.5, MaskMatrixNMS
    # update_threshold 0.05 pre_nms_top_n 500 post_nms_top_n 100 sigma 2.0
    "solov2_r50_fpn_paddlex": (PADDLE, "configs/solov2/solov2_r50_fpn_1x_coco.yml",
                               {**RCNN_1X, "train.batch_size": 2, "train.base_batch": 16, "train.warmup_start": 0.0,
                                "train.multiscale": None, "model.cls_score_thr": 0.1, "model.mask_thr": 0.5,
                                "model.nms_pre": 500, "model.nms_sigma": 2.0}, set(),
                               {"resize interpolation", "backbone weights"}),
    "maskrcnn_r101_fpn": (PADDLE, "configs/mask_rcnn/mask_rcnn_r101_fpn_1x_coco.yml", RCNN_1X, set(),
                          {"resize interpolation"}),
    "maskrcnn_r50vd_fpn": (PADDLE, "configs/mask_rcnn/mask_rcnn_r50_vd_fpn_1x_coco.yml", RCNN_1X, set(),
                           {"resize interpolation"}),
    "maskrcnn_r101vd_fpn": (PADDLE, "configs/mask_rcnn/mask_rcnn_r101_vd_fpn_1x_coco.yml", RCNN_1X, set(),
                            {"resize interpolation"}),
    "maskrcnn_x101vd_fpn": (PADDLE, "configs/mask_rcnn/mask_rcnn_x101_vd_64x4d_fpn_1x_coco.yml", RCNN_1X, set(),
                            {"resize interpolation"}),
    "maskrcnn_r50_c4": (PADDLE, "configs/mask_rcnn/mask_rcnn_r50_1x_coco.yml", RCNN_1X, set(),
                        {"resize interpolation"}),
    "cascade_maskrcnn_r50_fpn": (PADDLE, "configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.yml",
                                 {**RCNN_1X, "train.grad_clip": 35.0}, set(), {"resize interpolation"}),
    "cascade_maskrcnn_r50vd_fpn": (PADDLE, "configs/cascade_rcnn/cascade_mask_rcnn_r50_vd_fpn_ssld_1x_coco.yml",
                                   {**RCNN_1X, "train.grad_clip": 35.0}, set(),
                                   {"resize interpolation", "backbone weights", "backbone stage learning rates"}),
    "rtmdet_ins_tiny": (MMDET, "configs/rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py",
                        {**RTMDET_INS, "train.mixup_prob": 0.5}, set(),
                        RTMDET_SETTINGS - {"sample caches"}),
    "rtmdet_ins_s": (MMDET, "configs/rtmdet/rtmdet-ins_s_8xb32-300e_coco.py", RTMDET_INS, set(),
                     RTMDET_SETTINGS),
    # the m, l and x configs set no backbone init_cfg: they train from scratch
    "rtmdet_ins_m": (MMDET, "configs/rtmdet/rtmdet-ins_m_8xb32-300e_coco.py",
                     {**RTMDET_INS, "train.scale_jitter": [0.1, 2.0], "model.weights": "none"}, set(), RTMDET_SETTINGS),
    "rtmdet_ins_l": (MMDET, "configs/rtmdet/rtmdet-ins_l_8xb32-300e_coco.py",
                     {**RTMDET_INS, "train.scale_jitter": [0.1, 2.0], "model.weights": "none"}, set(), RTMDET_SETTINGS),
    "rtmdet_ins_x": (MMDET, "configs/rtmdet/rtmdet-ins_x_8xb16-300e_coco.py",
                     {**RTMDET_INS, "train.scale_jitter": [0.1, 2.0], "train.batch_size": 16,
                      "train.base_batch": 128, "train.lr": 0.002, "model.weights": "none"}, set(), RTMDET_SETTINGS),
    # configs/solov2/solov2_r50_fpn_ms-3x_coco.py (RandomChoiceResize (1333, 640..800), 36 epochs, LinearLR 1/3
    # over 500, MultiStepLR [27, 33]) on solov2_r50_fpn_1x_coco.py (lr 0.01, clip_grad max_norm 35, test_cfg
    # nms_pre 500, score_thr 0.1, mask_thr 0.5, filter_thr 0.05, sigma 2.0, max_per_img 100)
    "solov2_r50_fpn": (MMDET, "configs/solov2/solov2_r50_fpn_ms-3x_coco.py",
                       {**MMDET_RCNN_1X, "train.epochs": 36, "train.lr": 0.01, "train.milestones": [27, 33],
                        "train.warmup_start": 1 / 3, "train.grad_clip": 35.0,
                        "train.multiscale": [640, 672, 704, 736, 768, 800], "model.cls_score_thr": 0.1,
                        "model.mask_thr": 0.5, "model.nms_pre": 500, "model.nms_sigma": 2.0}, set(), set()),
    "maskrcnn_x101_32x8d_fpn": (MMDET, "configs/mask_rcnn/mask-rcnn_x101-32x8d_fpn_1x_coco.py", MMDET_RCNN_1X, set(),
                                {"backbone weights"}),
    # configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py: AdamW lr 0.0001 weight_decay 0.05, LinearLR over 1000
    "maskrcnn_swin_tiny_fpn": (MMDET, "configs/swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py",
                               {**MMDET_RCNN_1X, "train.optimizer": "adamw", "train.lr": 0.0001,
                                "train.weight_decay": 0.05, "train.decay_norms_and_biases": False,
                                "train.warmup_iters": 1000}, set(), {"weight decay exemptions", "drop path"}),
    # configs/resnest/mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py: SyncBN (trained) in backbone and heads,
    # RandomChoiceResize (1333, 640..800)
    "maskrcnn_resnest50_fpn": (MMDET, "configs/resnest/mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py",
                               {**MMDET_RCNN_1X, "train.sync_bn": True, "model.norm": "bn",
                                "train.multiscale": [640, 672, 704, 736, 768, 800]}, {"model.norm"}, {"heads"}),
    # configs/convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py: AdamW lr 0.0001 weight_decay 0.05
    # (LearningRateDecayOptimizerConstructor: no decay on 1-d weights and biases), 36 epochs, MultiStepLR [27, 33],
    # LinearLR over 1000, RandomChoiceResize (480..800, 1333) or a crop branch
    "maskrcnn_convnext_tiny_fpn": (MMDET, "configs/convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py",
                                   {**MMDET_RCNN_1X, "train.epochs": 36, "train.optimizer": "adamw",
                                    "train.lr": 0.0001, "train.weight_decay": 0.05,
                                    "train.decay_norms_and_biases": False, "train.milestones": [27, 33],
                                    "train.warmup_iters": 1000,
                                    "train.multiscale": [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]},
                                   set(), {"layer-wise learning rates", "weight decay exemptions", "crop branch",
                                           "drop path"}),
}  # fmt: skip
# shipped recipes that follow no published config: CPU recipes, and backbones no published config trains
UNPUBLISHED = {"maskrcnn_effnet_b2_fpn", "maskrcnn_mnv3_large_fpn", "maskrcnn_r50_fpn_v2"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_follows_its_published_config(name: str) -> None:
    (repository, commit), path, published, differing, settings = PUBLISHED[name]
    recipe = load_recipe(name)
    config = published_config(recipe["published"]["config"])
    assert (config["repository"], config["commit"], config["path"]) == (repository, commit, path)
    reasons = recipe["published"]["differences"]
    differs = set()
    for key, value in published.items():
        section, field = key.split(".", 1)
        if not same_value(recipe[section][field], value):
            differs.add(key)
            assert reasons.get(key, "").strip(), f"{name}: {key} is {recipe[section][field]!r}, published {value!r}"
    assert differs == differing, f"{name}: the differences left changed"
    assert {k for k in reasons if "." in k and k not in differing} == set(), "a reason for a value that is the same"
    assert set(config["settings"]) == settings and all(reasons.get(s, "").strip() for s in settings)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_shipped_table_holds_the_published_numbers(name: str) -> None:
    """`instaseg models NAME --published` shows the numbers read from the config, and calls none unexplained."""
    _, _, published, _, _ = PUBLISHED[name]
    recipe = load_recipe(name)
    shipped = published_config(recipe["published"]["config"])["values"]
    assert set(shipped) == set(published)
    for key, value in published.items():
        assert same_value(shipped[key], value), f"{name}: shipped {key} = {shipped[key]!r}, published {value!r}"
    assert all(row["status"] != "unexplained" for row in compare(recipe)["rows"])


def test_every_shipped_recipe_is_accounted_for() -> None:
    names = set(list_recipes())
    fast = {n for n in names if n.endswith("_fast")}
    assert names == set(PUBLISHED) | UNPUBLISHED | fast
    for name in UNPUBLISHED | fast:
        assert load_recipe(name)["published"] == {"config": None, "differences": {}}, name
