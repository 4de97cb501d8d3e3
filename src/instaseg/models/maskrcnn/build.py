"""Mask R-CNN (He et al. 2017) assembled from a recipe's `model` section.

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

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from instaseg.models.common.backbones import build_c4_backbone, build_fpn_backbone
from instaseg.models.common.rcnn import build_rpn, rcnn_transform, roi_pooler
from instaseg.models.maskrcnn.heads import MaskRoIHeads, Res5BoxHead
from instaseg.models.maskrcnn.model import MaskRCNNDetector
from instaseg.models.maskrcnn.recipe import DEFAULTS, norm_layer


def _fpn_parts(cfg: dict, download: bool, freeze: bool) -> dict[str, nn.Module]:
    backbone = build_fpn_backbone(cfg, download, freeze, norm_layer=norm_layer(cfg["fpn_norm"], "fpn_norm"))
    ch, names = backbone.out_channels, backbone.featmap_names
    head_norm = norm_layer(cfg["head_norm"], "head_norm")
    if cfg["box_head"] == "mlp":
        box_head = TwoMLPHead(ch * 7 * 7, cfg["representation_size"])
    else:
        box_head = FastRCNNConvFCHead((ch, 7, 7), cfg["box_conv_layers"], [cfg["representation_size"]], head_norm)
    layers = cfg["mask_head_layers"]
    return {
        "backbone": backbone,
        "box_roi_pool": roi_pooler(cfg, names, 7),
        "box_head": box_head,
        "box_channels": cfg["representation_size"],
        "mask_roi_pool": roi_pooler(cfg, names, 14),
        "mask_head": MaskRCNNHeads(ch, layers, 1, norm_layer=head_norm),
        "mask_channels": layers[-1] if layers else ch,
    }


def _c4_parts(cfg: dict, download: bool, freeze: bool) -> dict[str, nn.Module]:
    frozen = cfg["frozen_stages"] if freeze else -1
    backbone, res5 = build_c4_backbone(cfg["backbone"], cfg["norm"], download, frozen)
    res5_channels = res5[-1].conv3.out_channels
    return {
        "backbone": backbone,
        "box_roi_pool": roi_pooler(cfg, ["0"], 14),
        "box_head": Res5BoxHead(res5),
        "box_channels": res5_channels,
        "mask_roi_pool": roi_pooler(cfg, ["0"], 14),
        "mask_head": res5,  # the same module: weights shared with the box head
        "mask_channels": res5_channels,
    }


def build(recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False) -> MaskRCNNDetector:
    """Mask R-CNN for `num_classes` foreground classes, randomly initialised unless the backbone is."""
    cfg = {**DEFAULTS, **recipe["model"]}
    parts = (_fpn_parts if cfg["fpn"] else _c4_parts)(cfg, download_backbone, freeze)
    backbone = parts["backbone"]
    rpn = build_rpn(cfg, backbone.out_channels)
    # torchvision's FasterRCNN / MaskRCNN defaults for what recipes do not set (IoU 0.5 matching, box-coder weights)
    roi_heads = MaskRoIHeads(
        parts["box_roi_pool"],
        parts["box_head"],
        FastRCNNPredictor(parts["box_channels"], num_classes + 1),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=cfg["box_batch_size_per_image"],
        positive_fraction=cfg["box_positive_fraction"],
        bbox_reg_weights=None,
        # the eval section sets what the model returns: COCO AP wants a low threshold and max_dets detections
        score_thresh=recipe["eval"]["score_threshold"],
        nms_thresh=cfg["box_nms_thresh"],
        detections_per_img=recipe["eval"]["max_dets"],
        mask_roi_pool=parts["mask_roi_pool"],
        mask_head=parts["mask_head"],
        mask_predictor=MaskRCNNPredictor(parts["mask_channels"], cfg["mask_dim_reduced"], num_classes + 1),
        box_loss_beta=float(cfg["box_loss_beta"]),
    )
    return MaskRCNNDetector(rcnn_transform(recipe, cfg), backbone, rpn, roi_heads)
