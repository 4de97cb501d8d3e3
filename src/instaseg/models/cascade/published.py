"""Cascade Mask R-CNN weights PaddleX and PaddleDetection publish, and how their tensor names become ours.

PaddleX's Cascade-MaskRCNN-ResNet50-FPN and -ResNet50-vd-SSLDv2-FPN are PaddleDetection's
``configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.yml`` and ``cascade_mask_rcnn_r50_vd_fpn_ssld_1x_coco.yml``
(the same model sections); PaddleDetection publishes both configs' models too. ``--weights coco`` takes PaddleX's
file, ``--weights imagenet`` the ImageNet backbone the config starts from (ResNet50_cos; PaddleClas's distilled
ResNet50_vd SSLDv2). Box / mask AP are PaddleDetection's model-zoo figures on COCO val2017, which PaddleX repeats.

The map is `instaseg.models.common.paddle_rcnn` (three box stages ``bbox_head.head.{s}`` /
``bbox_score_stage{s}`` / ``bbox_delta_stage{s}`` -> ``roi_heads.stages.{s}``; class-agnostic box regressors, so only
the mask predictor's background slot is filled with zeros), checked on every published layout by
tests/test_paddle_weights.py. PaddleDetection's RoIAlign is aligned and its stage losses weigh differently: the
model-section switches (``roi_align_aligned: true`` ...) and docs/equivalence.md say where.
"""

from __future__ import annotations

from instaseg.models.common.paddle_rcnn import paddle_rcnn_weights
from instaseg.models.detector import PublishedWeights

PUBLISHED: tuple[PublishedWeights, ...] = (
    *paddle_rcnn_weights("cascade_maskrcnn_r50_fpn", "Cascade-MaskRCNN-ResNet50-FPN",
                         "cascade_mask_rcnn_r50_fpn_1x_coco", (41.8, 36.3), "ResNet50_cos_pretrained",
                         {"backbone": "resnet50"}),
    *paddle_rcnn_weights("cascade_maskrcnn_r50vd_fpn", "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN",
                         "cascade_mask_rcnn_r50_vd_fpn_ssld_1x_coco", (44.9, 39.1), "ResNet50_vd_ssld_v2_pretrained",
                         {"backbone": "resnet50d"}),
)  # fmt: skip
