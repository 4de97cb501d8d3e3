"""Cascade Mask R-CNN's model section: the shared R-CNN keys (`instaseg.models.common.rcnn.RCNN_DEFAULTS`, so a Mask
R-CNN recipe's backbone settings carry over) plus the cascade's, which are lists with one entry per box stage: their
length is the number of stages (three in the published configs). Values follow the published R50-FPN 1x configs
(PaddleDetection's cascade_mask_rcnn_r50_fpn, mmdetection's cascade-mask-rcnn_r50_fpn) on torchvision's components.

`RECIPE_DEFAULTS` is the published 1x recipe (PaddleDetection's
configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.yml: the R-CNN 1x recipe of
`instaseg.models.common.rcnn_recipe` plus gradient clipping at 35).
"""

from __future__ import annotations

from typing import Any

from instaseg.models.common.rcnn import RCNN_DEFAULTS, check_rcnn_section
from instaseg.models.common.rcnn_recipe import RCNN_1X, RCNN_1X_DIFFERENCES
from instaseg.models.common.rules import check_non_negative, check_weights, is_number, key_error

DEFAULTS: dict[str, Any] = {
    "architecture": "cascade_maskrcnn",
    **RCNN_DEFAULTS,
    "stage_iou_thresholds": [0.5, 0.6, 0.7],  # foreground IoU of each stage's matcher (one entry per stage)
    # 1/std of each stage's box deltas: (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)
    "stage_box_weights": [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]],
    "stage_loss_weights": [1.0, 0.5, 0.25],
    "box_loss_beta": 1.0,  # smooth-L1 beta of the box regression (mmdetection's cascade heads)
}
# COCO cascades: PaddleX's / PaddleDetection's (published.py); torchvision publishes none
DOWNLOADS = ("imagenet", "coco")
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {**RCNN_1X, "grad_clip": 35.0},  # clip_grad_by_norm: 35.0 (optimizer_1x.yml of cascade_rcnn)
    "published": {"differences": RCNN_1X_DIFFERENCES},
}


def validate(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete cascade_maskrcnn model section (types are checked against DEFAULTS)."""
    bad = key_error(cfg, source)
    check_rcnn_section(cfg, bad)
    _check_stages(cfg, bad)
    check_non_negative(cfg, bad, ("box_loss_beta",))  # 0 is an L1 loss
    check_weights(cfg, bad, DOWNLOADS, "cascade_maskrcnn")


def _check_stages(cfg: dict, bad) -> None:
    """The per-stage lists: one entry each per stage, thresholds in (0, 1), positive weights."""
    thresholds = cfg["stage_iou_thresholds"]
    if not thresholds or not all(is_number(t) and 0 < t < 1 for t in thresholds):
        raise bad("stage_iou_thresholds", "must be a non-empty list of IoUs in (0, 1), one per stage")
    stages = len(thresholds)
    box_weights = cfg["stage_box_weights"]
    if len(box_weights) != stages or not all(
        isinstance(w, list) and len(w) == 4 and all(is_number(v) and v > 0 for v in w) for w in box_weights
    ):
        raise bad("stage_box_weights", f"must hold {stages} lists of 4 positive numbers (one per stage)")
    loss_weights = cfg["stage_loss_weights"]
    if len(loss_weights) != stages or not all(is_number(w) and w >= 0 for w in loss_weights):
        raise bad("stage_loss_weights", f"must hold {stages} non-negative numbers (one per stage)")
