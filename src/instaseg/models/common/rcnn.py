"""What the two-stage R-CNN family (Mask R-CNN, Cascade Mask R-CNN) shares: the model keys of its backbone, FPN, RPN
and heads with their value rules, the RPN builder, and the detector base whose composition and module names are
torchvision's `GeneralizedRCNN` (transform -> backbone -> rpn -> roi_heads), so torchvision's checkpoints load by name.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from instaseg.models.common.backbones import check_backbone_and_norm
from instaseg.models.common.rcnn_export import tracing_functions
from instaseg.models.common.rcnn_ops import CellAnchorGenerator, ExactPasteTransform, RoIPooler
from instaseg.models.common.rules import (
    Bad,
    check_choice,
    check_fpn_levels,
    check_fraction,
    check_non_negative,
    check_positive_ints,
)
from instaseg.models.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputSpec, RawOutput, resize_transform
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS, SIZE_ROUNDINGS

# The model keys every R-CNN recipe has, with torchvision's maskrcnn_resnet50_fpn values (so the defaults are that
# model). An architecture's defaults add its own keys to these.
RCNN_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",
    "weights": "imagenet",  # none | imagenet | coco | PATH, used when build_model gets no weights
    "coco_weights": None,  # torchvision weight enum with COCO weights for exactly this model, if published
    "norm": "frozen_bn",  # backbone BatchNorm: frozen_bn (pretrained, small batches) | bn (from scratch)
    "frozen_stages": 1,  # stem + this many stages get no gradient when the backbone starts pretrained
    "levels": [2, 3, 4, 5],  # backbone stages C2..C5 (strides 4..32) fed to the FPN
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
    "representation_size": 1024,  # width of the box head's fc layers
    "box_batch_size_per_image": 512,
    "box_positive_fraction": 0.25,
    "box_nms_thresh": 0.5,
    "mask_head_layers": [256, 256, 256, 256],
    "mask_dim_reduced": 256,
    # Conventions that differ between publishers; the defaults are torchvision's (its COCO weights load by name).
    # PaddleDetection's weights want: anchors exact, roi_align_aligned true (its configs; see rcnn_ops),
    # roi_sampling_ratio 0, rpn_min_size 1, rpn_box_loss_beta 0 (L1), mask_paste exact
    "anchors": "torchvision",  # torchvision (rounded cell anchors, strides from the padded size) | exact
    "roi_align_aligned": False,  # RoIAlign samples half a pixel shifted (Detectron2's ROIAlignV2)
    "roi_sampling_ratio": None,  # RoIAlign points per bin side; 0 adapts to the RoI; null: 2 (FPN) or 0 (C4)
    "rpn_min_size": 0.001,  # proposals narrower or lower than this (input pixels) are dropped before NMS
    "rpn_box_loss_beta": 1 / 9,  # smooth-L1 beta of the RPN's box loss; 0 is an L1 loss
    "mask_paste": "torchvision",  # how a box's 28x28 mask lands in the image: torchvision | exact (see rcnn_ops)
    # a resized side made an integer: floor (torchvision's interpolate) | round (half up: PaddleDetection's Resize)
    "size_rounding": "floor",
    # resize and normalise: float (normalise, resize in float: torchvision's) | uint8_bilinear | uint8_bicubic (the
    # uint8 picture resized by OpenCV first: PaddleDetection's Resize, interp 1 or 2)
    "resize_order": "float",
    # the float32 arithmetic of the normalisation: unit ((v / 255 - mean) / std: torchvision's) | pixel ((v - 255 mean)
    # / (255 std): MMDetection's) | paddle (v x float32(1 / 255), then mean and std in float64: PaddleDetection's
    # NormalizeImage); see instaseg.utils.normalisation
    "normalisation": "unit",
    # the padded input's sides are multiples of this (torchvision's and Detectron2's FPN: 32); 1 pads nothing but a
    # batch's smaller pictures: Detectron2's and PaddleDetection's C4 models (size_divisibility 0, pad_to_stride -1),
    # whose border features the padding would change
    "size_divisible": 32,
}

# proposals kept before the box head, as multiples of the detections per image (eval.max_dets): a crowded image
# needs at least as many proposals as objects, and a margin for the ones the box head rejects
RPN_CANDIDATES: dict[str, float] = {
    "rpn_pre_nms_top_n_test": 2.0,
    "rpn_post_nms_top_n_test": 2.0,
    "rpn_pre_nms_top_n_train": 2.0,
    "rpn_post_nms_top_n_train": 1.0,
}
ANCHOR_KEYS = ("anchor_sizes", "aspect_ratios")


def rpn_levels(cfg: dict) -> int:
    """Feature maps the RPN sees: the FPN levels plus the pooled one, or the single C4 map."""
    return len(cfg["levels"]) + int(cfg["extra_pool"]) if cfg.get("fpn", True) else 1


def check_rcnn_section(cfg: dict, bad: Bad) -> None:
    """Value rules of the shared keys (`RCNN_DEFAULTS`)."""
    check_backbone_and_norm(cfg, bad)
    check_fpn_levels(cfg, bad)
    n = rpn_levels(cfg)
    if len(cfg["anchor_sizes"]) != n or not all(isinstance(s, list) and s for s in cfg["anchor_sizes"]):
        raise bad("anchor_sizes", f"must hold one non-empty list per RPN feature map ({n}: levels + extra_pool)")
    check_fraction(cfg, bad, ("box_positive_fraction", "box_nms_thresh", "rpn_nms_thresh"))
    check_positive_ints(cfg, bad, except_keys=("frozen_stages", "roi_sampling_ratio"))
    check_non_negative(cfg, bad, ("rpn_min_size", "rpn_box_loss_beta"))
    check_choice(cfg, bad, "anchors", ("torchvision", "exact"))
    check_choice(cfg, bad, "mask_paste", ("torchvision", "exact"))
    check_choice(cfg, bad, "size_rounding", SIZE_ROUNDINGS)
    check_choice(cfg, bad, "resize_order", RESIZE_ORDERS)
    check_choice(cfg, bad, "normalisation", NORMALISATIONS)
    ratio = cfg["roi_sampling_ratio"]
    if ratio is not None and not (isinstance(ratio, int) and not isinstance(ratio, bool) and ratio >= 0):
        raise bad("roi_sampling_ratio", "must be a non-negative integer (0: adaptive) or null")


def anchor_generator(cfg: dict) -> AnchorGenerator:
    ratios = tuple(float(r) for r in cfg["aspect_ratios"])
    sizes = tuple(tuple(int(s) for s in level) for level in cfg["anchor_sizes"])
    return CellAnchorGenerator(sizes, (ratios,) * rpn_levels(cfg), cfg.get("anchors", "torchvision") == "exact")


def roi_pooler(cfg: dict, names: list[str], output_size: int) -> RoIPooler:
    """The RoIAlign pooler of a model section: ``roi_sampling_ratio`` (null: 2 with an FPN, as torchvision's
    Mask R-CNN; 0, adaptive, on the single C4 map, as Detectron2's) and ``roi_align_aligned``."""
    ratio = cfg.get("roi_sampling_ratio")
    if ratio is None:
        ratio = 2 if cfg.get("fpn", True) else 0
    return RoIPooler(names, output_size, int(ratio), bool(cfg.get("roi_align_aligned", False)))


class ProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN (same modules and names) with the smooth-L1 beta of its box loss a setting (torchvision
    fixes it at 1/9; PaddleDetection and mmdetection use an L1 loss, beta 0)."""

    def __init__(self, *args, box_loss_beta: float = 1 / 9, **kwargs):
        super().__init__(*args, **kwargs)
        self.box_loss_beta = float(box_loss_beta)

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        neg = torch.where(torch.cat(neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels, regression_targets = torch.cat(labels, dim=0), torch.cat(regression_targets, dim=0)
        box_loss = (
            F.smooth_l1_loss(pred_bbox_deltas[pos], regression_targets[pos], beta=self.box_loss_beta, reduction="sum")
            / sampled.numel()
        )
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return objectness_loss, box_loss


def build_rpn(cfg: dict, channels: int) -> RegionProposalNetwork:
    """torchvision's RPN with its default matching (IoU 0.7 / 0.3, half positives) and the recipe's counts."""
    anchors = anchor_generator(cfg)
    head = RPNHead(channels, anchors.num_anchors_per_location()[0], cfg.get("rpn_conv_depth", 1))
    rpn = ProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=cfg["rpn_batch_size_per_image"],
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg["rpn_pre_nms_top_n_train"], "testing": cfg["rpn_pre_nms_top_n_test"]},
        post_nms_top_n={"training": cfg["rpn_post_nms_top_n_train"], "testing": cfg["rpn_post_nms_top_n_test"]},
        nms_thresh=cfg["rpn_nms_thresh"],
        box_loss_beta=cfg.get("rpn_box_loss_beta", 1 / 9),
    )
    rpn.min_size = float(cfg.get("rpn_min_size", 1e-3))  # torchvision's attribute, fixed at 1e-3 there
    return rpn


def rcnn_transform(recipe: dict, cfg: dict) -> nn.Module:
    """The recipe's resize rule as torchvision's transform (`resize_transform`'s settings), its resized sides made
    integers by ``size_rounding``, resized in the order ``resize_order`` names, normalised in the ``normalisation``
    arithmetic, padded to multiples of ``size_divisible`` and its eval-mode mask pasting following ``mask_paste``."""
    size = (recipe["input"]["min_size"], recipe["input"]["max_size"])
    rule = {"size_rounding": cfg.get("size_rounding", "floor"), "resize_order": cfg.get("resize_order", "float")}
    rule["normalisation"] = cfg.get("normalisation", "unit")
    rule["size_divisible"] = int(cfg.get("size_divisible", 32))
    if cfg.get("mask_paste", "torchvision") != "exact":
        return resize_transform(*size, **rule)
    return ExactPasteTransform(*size, list(IMAGENET_MEAN), list(IMAGENET_STD), **rule)


def busy_mask_logits(mask_predictor: nn.Module) -> None:
    """Per-box mask logits near 0.5 probability: random-init masks come out partly filled, as trained ones do."""
    with torch.no_grad():
        mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        mask_predictor.mask_fcn_logits.bias.add_(0.8)


class TwoStageDetector(Detector):
    """The detector contract for ``transform -> backbone -> rpn -> roi_heads`` models: the raw path up to each box's
    28x28 mask probabilities (``detect``, the architecture's own RoI heads), the exported graph traced with the
    export-friendly torchvision functions, and busy masks for benchmarks. The modules are set by the subclass."""

    mask_stride = None  # masks [N,28,28] span their own boxes
    transform: nn.Module
    backbone: nn.Module
    rpn: RegionProposalNetwork
    roi_heads: nn.Module

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.of_transform(self.transform)

    @property
    def mask_paste(self) -> str:
        """The transform that pastes the eager output's masks says how (one switch for both outputs)."""
        return "exact" if isinstance(self.transform, ExactPasteTransform) else "torchvision"

    def features(self, batch: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.backbone(batch)
        if isinstance(features, torch.Tensor):  # single-map (C4) backbones, as GeneralizedRCNN.forward allows
            features = OrderedDict([("0", features)])
        return features

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        features = self.features(batch)
        images = ImageList(batch, list(image_sizes))
        proposals, _ = self.rpn(images, features)
        return self.detect(features, proposals, images.image_sizes)

    def detect(self, features, proposals: list[torch.Tensor], image_sizes) -> list[RawOutput]:
        raise NotImplementedError(f"{type(self).__name__} does not implement detect")

    def export_forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the size stays a tensor: box clipping then follows each call's image, not the tracing example's
        with tracing_functions() if torch.onnx.is_in_onnx_export() else nullcontext():
            return tuple(self.raw_forward(images, [(image_size[0], image_size[1])])[0])

    def make_outputs_busy(self) -> None:
        busy_mask_logits(self.roi_heads.mask_predictor)
