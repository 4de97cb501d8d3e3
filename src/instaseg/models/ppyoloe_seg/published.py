"""PP-YOLOE-seg weights PaddleX and PaddleDetection publish, and how their tensor names become ours.

COCO model: PaddleX's PP-YOLOE_seg-S ("trained model" file) and PaddleDetection's
``configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml`` model (the same network; PaddleX's model section equals the
config's). Its published start (``pretrain_weights``) is no ImageNet classifier but a whole PP-YOLOE+ s detector
trained on Objects365 (``ppyoloe_crn_s_obj365_pretrained``): PaddleDetection's loader takes from it the backbone,
the neck and the head's shared layers, and leaves the 365-class predictor (its shape differs) and the mask branch
(absent) at their initialisation, and so the backbone's RepVGG ``alpha`` (that detector was built without it):
``--weights imagenet`` does the same. The metrics are PaddleX's, on COCO val2017.

The map (checked on every published layout by tests/test_paddle_weights.py):

| PaddleDetection | instaseg |
| --- | --- |
| ``backbone.stem.conv{k}`` | ``backbone.stem.{k-1}`` |
| ``stages.{i}.conv_down / conv1 / conv2 / conv3 / attn`` | ``down / short_conv / main_conv / fuse / attention`` |
| ``blocks.{j}.conv1 / conv2.conv1 / conv2.conv2 / conv2.alpha`` | ``conv / rep.conv3 / rep.conv1 / rep.alpha`` |
| ``neck.fpn_stages.{i}.0`` / ``neck.fpn_routes.{i}`` | ``neck.top_down.{i}`` / ``neck.lateral.{i}`` |
| ``neck.pan_stages.{i}.0`` / ``neck.pan_routes.{i}`` (coarse first) | ``neck.bottom_up.{1-i}`` / ``downsample.{1-i}`` |
| ``convs.{j}`` / ``convs.spp.conv`` (after the middle block) | ``blocks.{j'}`` / ``blocks.{middle+1}.fuse`` |
| ``yolo_head.{stem,pred}_{cls,reg,ins}.{i}`` (coarsest first) | ``head.{stem,pred}_{cls,reg,ins}.{2-i}`` |
| ``yolo_head.proto.conv1 / upsample / conv2 / conv3`` | ``head.prototypes.0 / 1 / 2 / 3`` |
| ``*._mean`` / ``*._variance`` | ``*.running_mean`` / ``*.running_var`` |

``yolo_head.proj_conv.weight`` is the fixed DFL projection 0..reg_max, which ours computes: dropped. Our
``train_steps`` counter (the static assigner's clock) is no part of any file and starts at 0, as a fine-tune
does in PaddleDetection. The model reads RGB / 255 (PP-YOLOE+'s NormalizeImage: mean 0, std 1), as ours does.
"""

from __future__ import annotations

import re

from instaseg.models.common.paddle_names import batch_norm, first_rule, scalars
from instaseg.models.detector import KeyMap, PublishedWeights

PADDLEX_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/{}_pretrained.pdparams"
PADDLEDET_URL = "https://paddledet.bj.bcebos.com/models/{}.pdparams"
PRETRAINED_URL = "https://bj.bcebos.com/v1/paddledet/models/pretrained/{}.pdparams"
_RULES = (
    (r"^backbone\.stem\.conv(\d)\.", lambda m: f"backbone.stem.{int(m.group(1)) - 1}."),
    (r"^(backbone\.stages\.\d+\.)conv_down\.", r"\1down."),
    (r"^(backbone\.stages\.\d+\.)conv1\.", r"\1short_conv."),
    (r"^(backbone\.stages\.\d+\.)conv2\.", r"\1main_conv."),
    (r"^(backbone\.stages\.\d+\.)conv3\.", r"\1fuse."),
    (r"^(backbone\.stages\.\d+\.)attn\.", r"\1attention."),
    (r"^neck\.fpn_stages\.(\d+)\.0\.", r"neck.top_down.\1."),
    (r"^neck\.fpn_routes\.(\d+)\.", r"neck.lateral.\1."),
    (r"^neck\.pan_stages\.(\d+)\.0\.", lambda m: f"neck.bottom_up.{1 - int(m.group(1))}."),
    (r"^neck\.pan_routes\.(\d+)\.", lambda m: f"neck.downsample.{1 - int(m.group(1))}."),
    (r"^yolo_head\.((?:stem|pred)_(?:cls|reg|ins))\.(\d)\.", lambda m: f"head.{m.group(1)}.{2 - int(m.group(2))}."),
    (r"^yolo_head\.proto\.conv1\.", "head.prototypes.0."),
    (r"^yolo_head\.proto\.upsample\.", "head.prototypes.1."),
    (r"^yolo_head\.proto\.conv2\.", "head.prototypes.2."),
    (r"^yolo_head\.proto\.conv3\.", "head.prototypes.3."),
)
# inside a CSP stage (the backbone's and the neck's), after the stage itself is renamed
_STAGE_RULES = (
    (r"^(neck\.\w+\.\d+\.)conv1\.", r"\1short_conv."),
    (r"^(neck\.\w+\.\d+\.)conv2\.", r"\1main_conv."),
    (r"^(neck\.\w+\.\d+\.)conv3\.", r"\1fuse."),
    (r"^(neck\.\w+\.\d+\.)convs\.(\d+)\.", r"\1blocks.\2."),
)
_BLOCK_RULES = (
    (r"(\.blocks\.\d+\.)conv1\.", r"\1conv."),
    (r"(\.blocks\.\d+\.)conv2\.conv1\.", r"\1rep.conv3."),
    (r"(\.blocks\.\d+\.)conv2\.conv2\.", r"\1rep.conv1."),
    (r"(\.blocks\.\d+\.)conv2\.alpha$", r"\1rep.alpha"),
)
DFL_PROJECTION = "yolo_head.proj_conv.weight"
_SPP_STAGE = "neck.fpn_stages.0.0.convs."  # the deepest top-down stage holds the SPP


def rename(name: str) -> str | None:
    """Our name for a tensor of PaddleDetection's PP-YOLOE-seg (or PP-YOLOE+) detector; None for the fixed DFL
    projection. Unknown names come back unchanged, so the conversion reports them as having no place in ours."""
    if name == DFL_PROJECTION:
        return None
    name = first_rule(_STAGE_RULES, first_rule(_RULES, name))
    return batch_norm(first_rule(_BLOCK_RULES, name))


def prepare(state: dict) -> dict:
    """The SPP stage's blocks renumbered as ours count them (the SPP is a block of ours, after the middle one: Paddle
    names it ``convs.spp`` and numbers the blocks without it), and scalar RepVGG ``alpha`` terms."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(_SPP_STAGE) + r"(\d+)\.", k))}
    middle = (max(blocks, default=0)) // 2
    out = {}
    for name, tensor in state.items():
        if name.startswith(_SPP_STAGE):
            rest = name[len(_SPP_STAGE) :]
            index, _, tail = rest.partition(".")
            if index == "spp":
                rest = f"{middle + 1}.{tail.replace('conv.', 'fuse.', 1)}"
            elif int(index) > middle:
                rest = f"{int(index) + 1}.{tail}"
            name = _SPP_STAGE + rest
        out[name] = tensor
    return scalars(out, ".alpha")


def _objects365_rename(name: str) -> str | None:
    """As `rename`, with the 365-class predictor left out: no class count of ours has its shape."""
    return None if name.startswith("yolo_head.pred_cls.") else rename(name)


DETECTOR = KeyMap(rename=rename, prepare=prepare, keep=("train_steps",))
# what the Objects365 detector fills: all but the class predictor and the mask branch; its backbone was built
# without the RepVGG alpha (use_alpha: False), which PaddleDetection then leaves at its initial 1, as ours
OBJECTS365 = KeyMap(rename=_objects365_rename, prepare=prepare, keep=("train_steps", ".rep.alpha"),
                    scope=("backbone.", "neck.", "head.stem_cls.", "head.stem_reg.", "head.pred_reg."))  # fmt: skip

_COMMON = {"format": "paddle", "model": {"backbone": "cspresnet_s"}, "recipe": "ppyoloe_seg_s"}
_CONFIG = "ppyoloe_seg_s_80e_coco"
PUBLISHED: tuple[PublishedWeights, ...] = (
    # the first COCO match is what --weights coco takes: PaddleX's file
    PublishedWeights("PP-YOLOE_seg-S", "coco", PADDLEX_URL.format("PP-YOLOE_seg-S"), publisher="PaddleX",
                     key_map=DETECTOR, box_ap=42.3, mask_ap=32.5, config=_CONFIG, **_COMMON),
    PublishedWeights(_CONFIG, "coco", PADDLEDET_URL.format(_CONFIG), publisher="PaddleDetection", key_map=DETECTOR,
                     box_ap=42.3, mask_ap=32.5, note="the same model as PaddleX's PP-YOLOE_seg-S", **_COMMON),
    PublishedWeights("ppyoloe_crn_s_obj365_pretrained", "imagenet", PRETRAINED_URL.format(
                     "ppyoloe_crn_s_obj365_pretrained"), publisher="PaddleDetection", key_map=OBJECTS365,
                     num_classes=365, config="ppyoloe_plus_crn_s_60e_objects365",
                     note=f"not ImageNet: the PP-YOLOE+ s Objects365 detector {_CONFIG} starts from", **_COMMON),
)  # fmt: skip
