"""Cascade Mask R-CNN assembled from a recipe's `model` section: Mask R-CNN's FPN design (backbone, FPN, RPN from
`instaseg.models.common`) and the cascade's RoI heads."""

from __future__ import annotations

from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from instaseg.models.cascade.heads import CascadeRoIHeads, CascadeStage
from instaseg.models.cascade.model import CascadeMaskRCNN
from instaseg.models.cascade.recipe import DEFAULTS
from instaseg.models.common.backbones import build_fpn_backbone
from instaseg.models.common.rcnn import build_rpn, rcnn_transform, roi_pooler


def _roi_heads(cfg: dict, channels: int, names: list[str], num_classes: int, eval_cfg: dict) -> CascadeRoIHeads:
    width = cfg["representation_size"]
    stages = [CascadeStage(channels * 7 * 7, width, num_classes) for _ in cfg["stage_iou_thresholds"]]
    layers = cfg["mask_head_layers"]
    return CascadeRoIHeads(
        box_roi_pool=roi_pooler(cfg, names, 7),
        stages=nn.ModuleList(stages),
        iou_thresholds=[float(t) for t in cfg["stage_iou_thresholds"]],
        box_weights=[tuple(float(v) for v in w) for w in cfg["stage_box_weights"]],
        loss_weights=[float(w) for w in cfg["stage_loss_weights"]],
        mask_roi_pool=roi_pooler(cfg, names, 14),
        mask_head=MaskRCNNHeads(channels, layers, 1),
        mask_predictor=MaskRCNNPredictor(layers[-1] if layers else channels, cfg["mask_dim_reduced"], num_classes + 1),
        batch_size_per_image=cfg["box_batch_size_per_image"],
        positive_fraction=cfg["box_positive_fraction"],
        box_loss_beta=float(cfg["box_loss_beta"]),
        # the eval section sets what the model returns: COCO AP wants a low threshold and max_dets detections
        score_thresh=float(eval_cfg["score_threshold"]),
        nms_thresh=float(cfg["box_nms_thresh"]),
        detections_per_img=int(eval_cfg["max_dets"]),
    )


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> CascadeMaskRCNN:
    """Cascade Mask R-CNN for `num_classes` foreground classes, randomly initialised unless the backbone is."""
    cfg = {**DEFAULTS, **recipe["model"]}
    backbone = build_fpn_backbone(cfg, download_backbone, freeze)
    channels, names = backbone.out_channels, backbone.featmap_names
    return CascadeMaskRCNN(
        rcnn_transform(recipe, cfg),
        backbone,
        build_rpn(cfg, channels),
        _roi_heads(cfg, channels, names, num_classes, recipe["eval"]),
    )
