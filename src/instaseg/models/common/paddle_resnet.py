"""PaddleDetection's ResNet family and FPN under our names: the rules every Paddle R-CNN and SOLOv2 map shares.

PaddleDetection names a ResNet (``ppdet.modeling.backbones.resnet``, with its NameAdapter) by stage and block
letter; ours are torchvision's (ResNet, variant b: the stride in the 3x3 convolution) and timm's ResNet-D
(``resnet50d``, ``resnet101d``, and the ResNeXt-vd built on it: deep stem, average-pool shortcuts):

| PaddleDetection | instaseg |
| --- | --- |
| ``conv1.conv1.conv / norm`` (7x7 stem) | ``conv1`` / ``bn1`` |
| ``conv1.conv1_{1,2,3}.conv`` (vd deep stem) | ``conv1.{0,3,6}`` |
| ``conv1.conv1_{1,2}.norm`` / ``conv1.conv1_3.norm`` | ``conv1.{1,4}`` / ``bn1`` |
| ``res{s}.res{s}{a,b,c..}`` / ``res4b{n}`` (101 layers) | ``layer{s-1}.{0,1,2..}`` / ``layer3.{n}`` |
| ``branch2{a,b,c}.conv / norm`` | ``conv{1,2,3}`` / ``bn{1,2,3}`` |
| ``short.conv / norm`` | ``downsample.0 / 1`` (vd: ``downsample.1 / 2``, after the pool) |
| ``short.conv.conv / norm`` (vd, stride 2: after the pool) | ``downsample.1 / 2`` |
| ``neck.fpn_inner_res{k}_sum[_lateral]`` | ``backbone.fpn.inner_blocks.{k-2}.0`` |
| ``neck.fpn_res{k}_sum`` | ``backbone.fpn.layer_blocks.{k-2}.0`` |
| ``*._mean`` / ``*._variance`` | ``*.running_mean`` / ``*.running_var`` |

PaddleDetection's ImageNet backbones (``pretrain_weights``) hold the same names without the ``backbone.`` prefix
(its loader matches them by suffix, ``ppdet.utils.checkpoint.match_state_dict``); the maps accept either.
"""

from __future__ import annotations

import re

from instaseg.models.common.paddle_names import Rule, batch_norm, first_rule

BLOCK = re.compile(r"^res(\d)\.res\d([a-z])(\d*)\.(.+)$")
_STEM = (
    (r"^conv1\.conv1\.conv\.", "conv1."),
    (r"^conv1\.conv1\.norm\.", "bn1."),
    (r"^conv1\.conv1_([123])\.conv\.", lambda m: f"conv1.{3 * (int(m.group(1)) - 1)}."),
    (r"^conv1\.conv1_3\.norm\.", "bn1."),
    (r"^conv1\.conv1_([12])\.norm\.", lambda m: f"conv1.{3 * (int(m.group(1)) - 1) + 1}."),
)
_BRANCH = (
    (r"^branch2([abc])\.conv\.", lambda m: f"conv{'abc'.index(m.group(1)) + 1}."),
    (r"^branch2([abc])\.norm\.", lambda m: f"bn{'abc'.index(m.group(1)) + 1}."),
)
_SHORTCUT = (  # torchvision: downsample = [conv, bn]
    (r"^short\.conv\.", "downsample.0."),
    (r"^short\.norm\.", "downsample.1."),
)
_SHORTCUT_VD = (  # timm's avg_down: downsample = [pool or identity, conv, bn]
    (r"^short\.(?:conv\.)?norm\.", "downsample.2."),  # before the next rule, which "short.conv.norm" would match
    (r"^short\.(?:conv\.)?conv\.", "downsample.1."),
)
FPN: tuple[Rule, ...] = (
    (r"^neck\.fpn_inner_res(\d)_sum(?:_lateral)?\.", lambda m: f"backbone.fpn.inner_blocks.{int(m.group(1)) - 2}.0."),
    (r"^neck\.fpn_res(\d)_sum\.", lambda m: f"backbone.fpn.layer_blocks.{int(m.group(1)) - 2}.0."),
)


def block_index(letter: str, number: str) -> int:
    """res4a -> 0, res4c -> 2, res4b22 -> 22 (PaddleDetection numbers the blocks after the first of a deep stage)."""
    return int(number) if number else ord(letter) - ord("a")


def block_name(rest: str, vd: bool) -> str:
    """A name inside one bottleneck (``branch2a.conv.weight``, ``short.norm._mean``) as ours."""
    return batch_norm(first_rule((*_BRANCH, *(_SHORTCUT_VD if vd else _SHORTCUT)), rest))


def resnet_name(name: str, vd: bool) -> str:
    """A ResNet tensor's name (without ``backbone.``) as torchvision's (``vd``: timm's ResNet-D) names it; names of
    no ResNet come back unchanged."""
    m = BLOCK.match(name)
    if m:
        stage, letter, number, rest = m.groups()
        return f"layer{int(stage) - 1}.{block_index(letter, number)}.{block_name(rest, vd)}"
    return batch_norm(first_rule(_STEM, name))


def imagenet_rename(vd: bool):
    """The rename of a PaddleDetection ImageNet ResNet file (``backbone.`` prefix or none) into ``backbone.body``; a
    classifier, where the file holds one, is no part of a detector."""

    def rename(name: str) -> str | None:
        name = name.removeprefix("backbone.")
        if name.startswith(("fc.", "out.")):
            return None
        return "backbone.body." + resnet_name(name, vd)

    return rename
