"""Mask R-CNN (He et al. 2017): `MaskRCNNDetector` assembled from a recipe's `model` section.

Two designs:
- FPN (`fpn: true`): backbone levels -> FPN -> RPN on every level; box and mask heads pool from the FPN maps
  (torchvision's / Detectron2's R50-FPN). With `box_head: conv` and `norm: bn` this is torchvision's "v2".
- C4 (`fpn: false`): Detectron2's R50-C4. The RPN and the RoI pooling (14x14) read the single stride-16 res4 map;
  the res5 stage (stride 2, so 14 -> 7) followed by average pooling is the box head, and the same res5 module
  (shared weights, as in Detectron2's Res5ROIHeads) feeds the mask predictor, which upsamples 7 -> 14. One
  difference: Detectron2 runs res5 once and reuses the foreground RoIs' features for the masks; torchvision's
  RoIHeads pools the mask RoIs again and runs res5 a second time on them. The outputs are the same design; the
  compute differs.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from instaseg.errors import UserError
from instaseg.models.backbones import (
    FeaturePyramidBackbone,
    build_c4_backbone,
    build_feature_body,
    check_backbone_and_norm,
    freeze_stages,
)
from instaseg.models.detector import key_error
from instaseg.models.maskrcnn.model import MaskRCNNDetector

# Every key a maskrcnn recipe may set; a recipe states only what differs. Values follow torchvision's
# maskrcnn_resnet50_fpn so the defaults are that model.
DEFAULTS: dict[str, Any] = {
    "architecture": "maskrcnn",
    "backbone": "resnet50",
    "weights": "imagenet",  # none | imagenet | coco | PATH, used when build_model gets no weights
    "coco_weights": None,  # torchvision weight enum with COCO weights for exactly this model, if published
    "norm": "frozen_bn",  # backbone BatchNorm: frozen_bn (pretrained, small batches) | bn (from scratch)
    "frozen_stages": 1,  # stem + this many stages get no gradient when the backbone starts pretrained
    "fpn": True,
    "levels": [2, 3, 4, 5],  # backbone stages C2..C5 (strides 4..32) fed to the FPN
    "fpn_channels": 256,
    "fpn_norm": None,  # None | bn
    "extra_pool": True,  # a max-pooled level above the last one, for the RPN only
    "anchor_sizes": [[32], [64], [128], [256], [512]],  # one list per RPN level
    "aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_conv_depth": 1,
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_thresh": 0.7,
    "rpn_batch_size_per_image": 256,
    "box_head": "mlp",  # mlp (two fc layers) | conv (conv_layers then one fc, torchvision's v2)
    "box_conv_layers": [256, 256, 256, 256],  # for box_head: conv
    "representation_size": 1024,
    "box_batch_size_per_image": 512,
    "box_positive_fraction": 0.25,
    "box_nms_thresh": 0.5,
    "head_norm": None,  # None | bn: normalisation in the conv box head and the mask head
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


def _norm_layer(name: str | None, key: str) -> type[nn.Module] | None:
    if name in (None, "none"):
        return None
    if name == "bn":
        return nn.BatchNorm2d
    raise UserError(f"unknown normalisation {name!r}; use null or bn", record=f"model.{key}")


def _rpn_levels(cfg: dict) -> int:
    return len(cfg["levels"]) + int(cfg["extra_pool"]) if cfg["fpn"] else 1


def _anchor_generator(cfg: dict) -> AnchorGenerator:
    n = _rpn_levels(cfg)
    sizes = cfg["anchor_sizes"]
    if len(sizes) != n:
        raise UserError(
            f"anchor_sizes has {len(sizes)} lists but the RPN sees {n} feature maps (levels + extra_pool)",
            record="model.anchor_sizes",
        )
    ratios = tuple(float(r) for r in cfg["aspect_ratios"])
    return AnchorGenerator(tuple(tuple(int(s) for s in level) for level in sizes), (ratios,) * n)


class _Res5BoxHead(nn.Sequential):
    """res5 stage + global average pooling: the box head of a C4 detector."""

    def __init__(self, res5: nn.Module):
        super().__init__(res5, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _fpn_parts(cfg: dict, download: bool, freeze: bool) -> dict[str, nn.Module]:
    body, info = build_feature_body(cfg["backbone"], cfg["norm"], download)
    if freeze:
        freeze_stages(body, info.stage_prefixes, cfg["frozen_stages"])
    backbone = FeaturePyramidBackbone(
        body, info, cfg["levels"], cfg["fpn_channels"], cfg["extra_pool"], _norm_layer(cfg["fpn_norm"], "fpn_norm")
    )
    ch, names = backbone.out_channels, backbone.featmap_names
    head_norm = _norm_layer(cfg["head_norm"], "head_norm")
    if cfg["box_head"] == "mlp":
        box_head = TwoMLPHead(ch * 7 * 7, cfg["representation_size"])
    elif cfg["box_head"] == "conv":
        box_head = FastRCNNConvFCHead((ch, 7, 7), cfg["box_conv_layers"], [cfg["representation_size"]], head_norm)
    else:
        raise UserError(f"unknown box_head {cfg['box_head']!r}; use mlp or conv", record="model.box_head")
    layers = cfg["mask_head_layers"]
    return {
        "backbone": backbone,
        "box_roi_pool": MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        "box_head": box_head,
        "box_channels": cfg["representation_size"],
        "mask_roi_pool": MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
        "mask_head": MaskRCNNHeads(ch, layers, 1, norm_layer=head_norm),
        "mask_channels": layers[-1] if layers else ch,
    }


def _c4_parts(cfg: dict, download: bool, freeze: bool) -> dict[str, nn.Module]:
    frozen = cfg["frozen_stages"] if freeze else -1
    backbone, res5 = build_c4_backbone(cfg["backbone"], cfg["norm"], download, frozen)
    res5_channels = res5[-1].conv3.out_channels
    return {
        "backbone": backbone,
        # sampling_ratio=0 (adaptive) as Detectron2's C4 pooler
        "box_roi_pool": MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        "box_head": _Res5BoxHead(res5),
        "box_channels": res5_channels,
        "mask_roi_pool": MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=0),
        "mask_head": res5,  # the same module: weights shared with the box head
        "mask_channels": res5_channels,
    }


def build_maskrcnn(
    recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False
) -> MaskRCNNDetector:
    """Mask R-CNN for `num_classes` foreground classes, randomly initialised unless the backbone is."""
    cfg = {**DEFAULTS, **recipe["model"]}
    build_parts = _fpn_parts if cfg["fpn"] else _c4_parts
    parts = build_parts(cfg, download_backbone, freeze)
    anchors = _anchor_generator(cfg)
    backbone = parts["backbone"]
    return MaskRCNNDetector(
        backbone,
        num_classes=None,
        min_size=recipe["input"]["min_size"],
        max_size=recipe["input"]["max_size"],
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0], cfg["rpn_conv_depth"]),
        rpn_pre_nms_top_n_train=cfg["rpn_pre_nms_top_n_train"],
        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=cfg["rpn_post_nms_top_n_train"],
        rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
        rpn_nms_thresh=cfg["rpn_nms_thresh"],
        rpn_batch_size_per_image=cfg["rpn_batch_size_per_image"],
        box_roi_pool=parts["box_roi_pool"],
        box_head=parts["box_head"],
        box_predictor=FastRCNNPredictor(parts["box_channels"], num_classes + 1),
        # the eval section sets what the model returns: COCO AP wants a low threshold and max_dets detections
        box_score_thresh=recipe["eval"]["score_threshold"],
        box_nms_thresh=cfg["box_nms_thresh"],
        box_detections_per_img=recipe["eval"]["max_dets"],
        box_batch_size_per_image=cfg["box_batch_size_per_image"],
        box_positive_fraction=cfg["box_positive_fraction"],
        mask_roi_pool=parts["mask_roi_pool"],
        mask_head=parts["mask_head"],
        mask_predictor=MaskRCNNPredictor(parts["mask_channels"], cfg["mask_dim_reduced"], num_classes + 1),
    )


def validate_model_section(cfg: dict, source: str | None = None) -> None:
    """Value rules of a complete maskrcnn model section (types are checked against DEFAULTS by the config)."""
    bad = key_error(cfg, source)

    check_backbone_and_norm(cfg, bad)
    for key in ("fpn_norm", "head_norm"):
        _norm_layer(cfg[key], key)
    levels = cfg["levels"]
    if not levels or sorted(set(levels)) != levels or not set(levels) <= {2, 3, 4, 5}:
        raise bad("levels", "must be increasing stage numbers among 2, 3, 4, 5")
    if cfg["box_head"] not in ("mlp", "conv"):
        raise bad("box_head", "must be mlp or conv")
    if not cfg["fpn"] and cfg["box_head"] != "mlp":
        raise bad("box_head", "is the res5 stage in the C4 design; leave it at mlp")
    n = _rpn_levels(cfg)
    if len(cfg["anchor_sizes"]) != n or not all(isinstance(s, list) and s for s in cfg["anchor_sizes"]):
        raise bad("anchor_sizes", f"must hold one non-empty list per RPN feature map ({n})")
    for key, value in cfg.items():
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0 and key != "frozen_stages":
            raise bad(key, "must be positive")
    if not isinstance(cfg["weights"], str) or not cfg["weights"]:
        raise bad("weights", "must be none, imagenet, coco or a path")
