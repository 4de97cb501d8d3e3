"""The published R-CNN 1x training recipe Mask R-CNN and Cascade Mask R-CNN share (their architectures' recipe
defaults start from it; neither package imports the other)."""

from __future__ import annotations

from typing import Any

# PaddleDetection's configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml (with _base_/optimizer_1x.yml and
# _base_/mask_fpn_reader.yml): SGD 0.01 for 8 GPUs x 1 image, 1000 warmup steps, x 0.1 after epochs 8 and 11,
# shorter sides 640..800 drawn per image, flips. `instaseg models NAME --published` shows a recipe beside its config.
RCNN_1X: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 1,  # per GPU
    "base_batch": 8,  # 8 GPUs x 1 image
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "lr_schedule": "multistep",
    "milestones": [8, 11],
    "gamma": 0.1,
    "warmup_iters": 1000,
    "warmup_start": 0.001,
    "ema": False,
    "early_stop_patience": None,
    "scale_jitter": None,
    "multiscale": [640, 672, 704, 736, 768, 800],  # RandomResize, longer side at most 1333
    "hflip": True,
    "photometric": False,
    "grad_clip": None,
}
RCNN_1X_DIFFERENCES: dict[str, str] = {
    "resize interpolation": "training's data pipeline resizes the uint8 picture bilinearly with torchvision (the "
    "reference: OpenCV bicubic on uint8); the predictor, every exported backend and the eager model resize as the "
    "reference evaluates where the recipe sets model.resize_order: uint8_bicubic (the recipes of PaddleX's models), "
    "else bilinearly in float",
}
