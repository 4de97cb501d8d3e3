"""Cascade Mask R-CNN assembled from a recipe's `model` section: the parts and their defaults.

Backbone, FPN and RPN are the Mask R-CNN FPN design (`instaseg.models.backbones`, torchvision's RPN) with the same
recipe keys, so a Mask R-CNN recipe's backbone settings carry over. The keys of the cascade are lists with one
entry per box stage; their length is the number of stages (three in the published configs).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from instaseg.models.backbones import FeaturePyramidBackbone, build_feature_body, check_backbone_and_norm, freeze_stages
from instaseg.models.cascade.model import CascadeMaskRCNN
from instaseg.models.cascade.roi_heads import CascadeRoIHeads, CascadeStage
from instaseg.models.detector import key_error

# Every key a cascade_maskrcnn recipe may set. Values follow the published R50-FPN 1x configs (PaddleDetection's
# cascade_mask_rcnn_r50_fpn, mmdetection's cascade-mask-rcnn_r50_fpn) on torchvision's Mask R-CNN components.
DEFAULTS: dict[str, Any] = {
    "architecture": "cascade_maskrcnn",
    "backbone": "resnet50",
    "weights": "imagenet",  # none | imagenet | PATH (no COCO cascade checkpoint is published for torchvision)
    "coco_weights": None,
    "norm": "frozen_bn",  # backbone BatchNorm: frozen_bn (pretrained, small batches) | bn (from scratch)
    "frozen_stages": 1,  # stem + this many stages get no gradient when the backbone starts pretrained
    "levels": [2, 3, 4, 5],  # backbone stages C2..C5 fed to the FPN
    "fpn_channels": 256,
    "extra_pool": True,  # a max-pooled level above the last one, for the RPN only
    "anchor_sizes": [[32], [64], [128], [256], [512]],  # one list per RPN level
    "aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_thresh": 0.7,
    "rpn_batch_size_per_image": 256,
    "representation_size": 1024,  # width of each stage's two fc layers
    "stage_iou_thresholds": [0.5, 0.6, 0.7],  # foreground IoU of each stage's matcher (one entry per stage)
    # 1/std of each stage's box deltas: (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)
    "stage_box_weights": [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]],
    "stage_loss_weights": [1.0, 0.5, 0.25],
    "box_batch_size_per_image": 512,  # RoIs sampled for the first stage; later stages relabel the refined ones
    "box_positive_fraction": 0.25,
    "box_loss_beta": 1.0,  # smooth-L1 beta of the box regression (mmdetection's cascade heads)
    "box_nms_thresh": 0.5,
    "mask_head_layers": [256, 256, 256, 256],
    "mask_dim_reduced": 256,
}

# proposals kept before the box head, as multiples of the detections per image (eval.max_dets): a crowded image
# needs at least as many proposals as objects, and a margin for the ones the box head rejects
RPN_CANDIDATES: dict[str, float] = {
    "rpn_pre_nms_top_n_test": 2.0,
    "rpn_post_nms_top_n_test": 2.0,
    "rpn_pre_nms_top_n_train": 2.0,
    "rpn_post_nms_top_n_train": 1.0,
}


def _anchor_generator(cfg: dict) -> AnchorGenerator:
    n = len(cfg["levels"]) + int(cfg["extra_pool"])
    ratios = tuple(float(r) for r in cfg["aspect_ratios"])
    return AnchorGenerator(tuple(tuple(int(s) for s in level) for level in cfg["anchor_sizes"]), (ratios,) * n)


def _rpn(cfg: dict, channels: int) -> RegionProposalNetwork:
    anchors = _anchor_generator(cfg)
    return RegionProposalNetwork(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=cfg["rpn_batch_size_per_image"],
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg["rpn_pre_nms_top_n_train"], "testing": cfg["rpn_pre_nms_top_n_test"]},
        post_nms_top_n={"training": cfg["rpn_post_nms_top_n_train"], "testing": cfg["rpn_post_nms_top_n_test"]},
        nms_thresh=cfg["rpn_nms_thresh"],
    )


def _roi_heads(cfg: dict, channels: int, names: list[str], num_classes: int, eval_cfg: dict) -> CascadeRoIHeads:
    width = cfg["representation_size"]
    stages = [CascadeStage(channels * 7 * 7, width, num_classes) for _ in cfg["stage_iou_thresholds"]]
    layers = cfg["mask_head_layers"]
    return CascadeRoIHeads(
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        stages=nn.ModuleList(stages),
        iou_thresholds=[float(t) for t in cfg["stage_iou_thresholds"]],
        box_weights=[tuple(float(v) for v in w) for w in cfg["stage_box_weights"]],
        loss_weights=[float(w) for w in cfg["stage_loss_weights"]],
        mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
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


def build_cascade_maskrcnn(
    recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False
) -> CascadeMaskRCNN:
    """Cascade Mask R-CNN for `num_classes` foreground classes, randomly initialised unless the backbone is."""
    cfg = {**DEFAULTS, **recipe["model"]}
    body, info = build_feature_body(cfg["backbone"], cfg["norm"], download_backbone)
    if freeze:
        freeze_stages(body, info.stage_prefixes, cfg["frozen_stages"])
    backbone = FeaturePyramidBackbone(body, info, cfg["levels"], cfg["fpn_channels"], cfg["extra_pool"])
    channels, names = backbone.out_channels, backbone.featmap_names
    return CascadeMaskRCNN(
        backbone,
        _rpn(cfg, channels),
        _roi_heads(cfg, channels, names, num_classes, recipe["eval"]),
        min_size=recipe["input"]["min_size"],
        max_size=recipe["input"]["max_size"],
    )


def validate_model_section(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete cascade_maskrcnn model section (types are checked against DEFAULTS)."""

    bad = key_error(cfg, source)

    check_backbone_and_norm(cfg, bad)
    levels = cfg["levels"]
    if not levels or sorted(set(levels)) != levels or not set(levels) <= {2, 3, 4, 5}:
        raise bad("levels", "must be increasing stage numbers among 2, 3, 4, 5")
    n = len(levels) + int(cfg["extra_pool"])
    if len(cfg["anchor_sizes"]) != n or not all(isinstance(s, list) and s for s in cfg["anchor_sizes"]):
        raise bad("anchor_sizes", f"must hold one non-empty list per RPN feature map ({n}: levels + extra_pool)")
    _validate_stages(cfg, bad)
    for key in ("box_positive_fraction", "box_nms_thresh", "rpn_nms_thresh"):
        if not 0 < cfg[key] <= 1:
            raise bad(key, "must be in (0, 1]")
    if cfg["box_loss_beta"] < 0:
        raise bad("box_loss_beta", "must be >= 0 (0 is an L1 loss)")
    for key, value in cfg.items():
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0 and key != "frozen_stages":
            raise bad(key, "must be positive")
    if str(cfg["weights"]).lower() == "coco":
        raise bad("weights", "has no published COCO download for a cascade; use imagenet, none or a PATH")
    if not isinstance(cfg["weights"], str) or not cfg["weights"]:
        raise bad("weights", "must be none, imagenet or a path")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_stages(cfg: dict, bad) -> None:
    """The per-stage lists: one entry each per stage, thresholds in (0, 1), positive weights."""
    thresholds = cfg["stage_iou_thresholds"]
    if not thresholds or not all(_number(t) and 0 < t < 1 for t in thresholds):
        raise bad("stage_iou_thresholds", "must be a non-empty list of IoUs in (0, 1), one per stage")
    stages = len(thresholds)
    box_weights = cfg["stage_box_weights"]
    if len(box_weights) != stages or not all(
        isinstance(w, list) and len(w) == 4 and all(_number(v) and v > 0 for v in w) for w in box_weights
    ):
        raise bad("stage_box_weights", f"must hold {stages} lists of 4 positive numbers (one per stage)")
    loss_weights = cfg["stage_loss_weights"]
    if len(loss_weights) != stages or not all(_number(w) and w >= 0 for w in loss_weights):
        raise bad("stage_loss_weights", f"must hold {stages} non-negative numbers (one per stage)")
