"""PaddleDetection's Mask R-CNN and Cascade Mask R-CNN under our (torchvision's) names: the key maps both
architectures' ``published.py`` build (the packages never import each other).

Beside the ResNet and FPN names (`instaseg.models.common.paddle_resnet`):

| PaddleDetection | instaseg |
| --- | --- |
| ``rpn_head.rpn_feat.rpn_conv`` / ``rpn_head.rpn_rois_score`` | ``rpn.head.conv.0.0`` / ``rpn.head.cls_logits`` |
| ``rpn_head.rpn_rois_delta`` | ``rpn.head.bbox_pred`` |
| ``bbox_head.head.fc{6,7}`` ([in, out]) | ``roi_heads.box_head.fc{6,7}`` (transposed) |
| ``bbox_head.head.{s}.fc{6,7}`` (cascade) | ``roi_heads.stages.{s}.head.fc{6,7}`` |
| ``bbox_head.bbox_score[_stage{s}]`` / ``bbox_delta[_stage{s}]`` | ``...cls_score`` / ``...bbox_pred`` |
| ``bbox_head.head.res5.res5{a,b,c}`` (C4) | ``roi_heads.box_head.0.{i}`` and ``roi_heads.mask_head.{i}`` (one module) |
| ``mask_head.head.upsample.mask_inter_feat_{i}`` | ``roi_heads.mask_head.{i-1}.0`` |
| ``mask_head.head.upsample.conv5_mask`` / ``mask_head.mask_fcn_logits`` | ``roi_heads.mask_predictor.conv5_mask`` / |
| | ``roi_heads.mask_predictor.mask_fcn_logits`` |

Where the layouts differ:
- the box classifier: Paddle's background class is the last row, torchvision's the first: moved;
- torchvision's class-wise box regressor (4 rows) and mask predictor (1 mask) have a background slot Paddle's
  have not (K x 4 deltas, K masks): filled with zeros. Inference never reads it (detections take the predicted
  foreground class's deltas and mask), and training does not either (the box loss reads the labelled class's
  deltas, the mask loss the labelled class's mask). Cascade's box regressors are class-agnostic (4): unchanged;
- the C4 RPN lists a location's 15 anchors size by size (all ratios of one size together), torchvision ratio by
  ratio: its output channels are reordered (with one size per level, FPN, the orders agree).
"""

from __future__ import annotations

import re

import torch

from instaseg.models.common.paddle_names import (
    PADDLEDET_PRETRAINED_URL,
    PADDLEDET_URL,
    PADDLEX_URL,
    Rule,
    first_rule,
    last_row_first,
    rows_first,
    torch_linear,
)
from instaseg.models.common.paddle_resnet import FPN, imagenet_rename, resnet_name
from instaseg.models.detector import KeyMap, PublishedWeights

VD_BACKBONES = ("resnet50d", "resnet101d", "resnext101_64x4d_vd")  # timm's ResNet-D: deep stem, pooled shortcut
RATIOS = 3  # every published config: aspect ratios [0.5, 1.0, 2.0]
TWIN = "c4_mask_head."  # the name prepare gives the C4 res5's second copy (ours names it twice)
RES5_HEAD = re.compile(r"^bbox_head\.head\.res5\.")  # a C4 detector's box head
RES5_FILE = re.compile(r"^(?:backbone\.)?res5\.")  # an ImageNet file's last stage
_HEADS: tuple[Rule, ...] = (
    (r"^rpn_head\.rpn_feat\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_rois_score\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_rois_delta\.", "rpn.head.bbox_pred."),
    (r"^bbox_head\.head\.(fc[67])\.", r"roi_heads.box_head.\1."),
    (r"^bbox_head\.head\.(\d)\.(fc[67])\.", r"roi_heads.stages.\1.head.\2."),
    (r"^bbox_head\.bbox_score\.", "roi_heads.box_predictor.cls_score."),
    (r"^bbox_head\.bbox_delta\.", "roi_heads.box_predictor.bbox_pred."),
    (r"^bbox_head\.bbox_score_stage(\d)\.", r"roi_heads.stages.\1.cls_score."),
    (r"^bbox_head\.bbox_delta_stage(\d)\.", r"roi_heads.stages.\1.bbox_pred."),
    (r"^mask_head\.head\.upsample\.mask_inter_feat_(\d)\.", lambda m: f"roi_heads.mask_head.{int(m.group(1)) - 1}.0."),
    (r"^mask_head\.head\.upsample\.conv5_mask\.", "roi_heads.mask_predictor.conv5_mask."),
    (r"^mask_head\.mask_fcn_logits\.", "roi_heads.mask_predictor.mask_fcn_logits."),
)


def anchors_ratio_major(tensor: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """RPN output channels (``per_anchor`` each) from Paddle's size-major anchor order to torchvision's ratio-major
    one: our anchor r * sizes + s is Paddle's s * RATIOS + r."""
    sizes = tensor.shape[0] // per_anchor // RATIOS
    groups = tensor.reshape(sizes * RATIOS, per_anchor, *tensor.shape[1:])
    order = [s * RATIOS + r for r in range(RATIOS) for s in range(sizes)]
    return torch.cat([groups[i : i + 1] for i in order]).reshape(tensor.shape)


def _torchvision_layout(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A class-dependent tensor (torch layout) with torchvision's background slot, an RPN output layer in its anchor
    order: see the module's notes."""
    if re.match(r"^bbox_head\.bbox_score(_stage\d)?\.", name):
        return last_row_first(tensor)
    if re.match(r"^bbox_head\.bbox_delta(_stage\d)?\.", name) and tensor.shape[0] != 4:
        return rows_first(tensor, 4)
    if name.startswith("mask_head.mask_fcn_logits."):
        return rows_first(tensor, 1)
    if name.startswith("rpn_head.rpn_rois_score."):
        return anchors_ratio_major(tensor, 1)
    if name.startswith("rpn_head.rpn_rois_delta."):
        return anchors_ratio_major(tensor, 4)
    return tensor


def _with_res5_twin(state: dict, res5: re.Pattern = RES5_HEAD) -> dict:
    """The C4 res5 stage is one module of ours under two names (box head and mask head): each of its tensors once
    more, for the second name."""
    twins = {TWIN + res5.sub("res5.", name): t for name, t in state.items() if res5.match(name)}
    return {**state, **twins}


def _imagenet_c4_prepare(state: dict) -> dict:
    return _with_res5_twin(state, RES5_FILE)


def prepare(state: dict) -> dict:
    """Linear weights transposed, the class-dependent layers given torchvision's background slot, the C4 RPN's
    anchors reordered and the C4 res5 stage named twice."""
    state = torch_linear(state)
    return _with_res5_twin({name: _torchvision_layout(name, t) for name, t in state.items()})


def _res5(name: str, vd: bool) -> str | None:
    """C4: Paddle's res5 (the box head's, or an ImageNet file's) as our box head's, or its twin as our mask head's."""
    twin = name.startswith(TWIN)
    name = RES5_FILE.sub("res5.", RES5_HEAD.sub("res5.", name.removeprefix(TWIN)))
    if not name.startswith("res5."):
        return None
    block = resnet_name(name, vd).removeprefix("layer4.")
    return f"roi_heads.mask_head.{block}" if twin else f"roi_heads.box_head.0.{block}"


def detector_rename(vd: bool):
    """The rename of a PaddleDetection Mask R-CNN / Cascade Mask R-CNN detector (C4 or FPN)."""

    def rename(name: str) -> str | None:
        if name.startswith(TWIN) or RES5_HEAD.match(name):
            return _res5(name, vd)
        if name.startswith("backbone."):
            return "backbone.body." + resnet_name(name.removeprefix("backbone."), vd)
        return first_rule((*FPN, *_HEADS), name)

    return rename


def imagenet_c4_rename(vd: bool):
    """An ImageNet ResNet file for the C4 design: res2..res4 into the backbone, res5 into the box head (and, the same
    module, the mask head), as PaddleDetection's loader matches ``res5`` to its box head."""
    backbone = imagenet_rename(vd)

    def rename(name: str) -> str | None:
        return _res5(name, vd) if name.startswith(TWIN) or RES5_FILE.match(name) else backbone(name)

    return rename


def detector_map(vd: bool) -> KeyMap:
    return KeyMap(rename=detector_rename(vd), prepare=prepare)


def imagenet_map(vd: bool, c4: bool = False) -> KeyMap:
    """What an ImageNet ResNet file fills: the backbone, and for C4 the res5 box head."""
    if c4:
        scope = ("backbone.body.", "roi_heads.box_head.", "roi_heads.mask_head.")
        return KeyMap(rename=imagenet_c4_rename(vd), prepare=_imagenet_c4_prepare, scope=scope)
    return KeyMap(rename=imagenet_rename(vd), scope="backbone.body.")


def paddle_rcnn_weights(
    recipe: str, paddlex: str, config: str, ap: tuple[float, float], pretrained: str, model: dict
) -> tuple[PublishedWeights, ...]:
    """A recipe's published files: PaddleX's COCO model (what ``--weights coco`` takes), PaddleDetection's file of
    the same config beside it (PaddleX's model section equals the config's), and the ImageNet backbone the config
    starts from. ``ap``: the published (box, mask) AP on COCO val2017; ``model``: the model-section values the
    files need (backbone; for Mask R-CNN, FPN or C4)."""
    vd = model["backbone"] in VD_BACKBONES
    c4 = model.get("fpn") is False
    common = {"format": "paddle", "model": model, "recipe": recipe, "box_ap": ap[0], "mask_ap": ap[1]}
    coco = detector_map(vd)
    return (
        PublishedWeights(paddlex, "coco", PADDLEX_URL.format(paddlex), publisher="PaddleX", key_map=coco,
                         config=config, **common),
        PublishedWeights(config, "coco", PADDLEDET_URL.format(config), publisher="PaddleDetection", key_map=coco,
                         note=f"the same model as PaddleX's {paddlex}", **common),
        PublishedWeights(pretrained, "imagenet", PADDLEDET_PRETRAINED_URL.format(pretrained),
                         publisher="PaddleDetection", format="paddle", model=model, recipe=recipe,
                         key_map=imagenet_map(vd, c4), note=f"the ImageNet backbone {config} starts from"),
    )  # fmt: skip
