"""SOLOv2 weights MMDetection, PaddleX and PaddleDetection publish, and how their tensor names become ours.

The R50-FPN COCO models of MMDetection 3.3's ``configs/solov2/metafile.yml`` (files of its 2.x model zoo, with
the module names 3.3 still builds); their ImageNet backbone is torchvision's ResNet-50 (``torchvision://resnet50``),
which ``--weights imagenet`` fetches through torchvision. The 3x multi-scale model is the same network as the 1x one,
trained longer: the recipe ``solov2_r50_fpn`` follows the 3x config, so ``--weights coco`` takes it.

| MMDetection | instaseg |
| --- | --- |
| ``backbone.*`` (ResNet, torchvision's names) | ``backbone.body.*`` |
| ``neck.lateral_convs.{i}.conv.*`` | ``backbone.fpn.inner_blocks.{i}.0.*`` |
| ``neck.fpn_convs.{i}.conv.*`` | ``backbone.fpn.layer_blocks.{i}.0.*`` |
| ``mask_head.{cls,kernel}_convs.{i}.{conv,gn}.*`` | ``head.{cls,kernel}_convs.{i}.{0,1}.*`` |
| ``mask_head.conv_{cls,kernel}.*`` | ``head.conv_{cls,kernel}.*`` |
| ``mask_head.mask_feature_head.convs_all_levels.{l}.conv{j}.{conv,gn}.*`` | ``mask_head.levels.{l}.{j}.{0,1}.*`` |
| ``mask_head.mask_feature_head.conv_pred.{conv,gn}.*`` | ``mask_head.predict.{0,1}.*`` |

The backbone's BatchNorm counters (``num_batches_tracked``) have no place in our frozen BatchNorm and are not
loaded. SOLOv2's pre-processor converts to RGB (``bgr_to_rgb=True``): no channel to reverse.

PaddleX's SOLOv2 is PaddleDetection's ``configs/solov2/solov2_r50_fpn_1x_coco.yml`` (the same model section); its
3x multi-scale model is the same network. They belong to the recipe ``solov2_r50_fpn_paddlex`` (the same network
with PaddleDetection's pre- and post-processing), whose ``--weights coco`` takes PaddleX's file; ``solov2_r50_fpn``
(MMDetection's conventions) takes MMDetection's and loads PaddleX's by its name (``--weights SOLOv2``). Their
ImageNet start (ResNet50_cos) is not listed: ``--weights imagenet`` keeps torchvision's ResNet-50.
Mask AP as PaddleDetection's model zoo publishes it (COCO val2017; PaddleX repeats the 1x figure).

| PaddleDetection | instaseg |
| --- | --- |
| ``backbone.*`` / ``neck.*`` (ResNet, FPN) | `instaseg.models.common.paddle_resnet`'s rules |
| ``solov2_head.bbox_head.{kernel,cate}_convs.{i}.{conv,norm}.*`` | ``head.{kernel,cls}_convs.{i}.{0,1}.*`` |
| ``solov2_head.bbox_head.solo_{kernel,cate}.*`` | ``head.conv_{kernel,cls}.*`` |
| ``mask_head.conv_pre_feat{l}.mask_feat_head.convs_all_levels.{l}.conv{j}.{conv,norm}.*`` | |
| | ``mask_head.levels.{l}.{j}.{0,1}.*`` |
| ``mask_head.mask_feat_head.conv_pred.0.{conv,norm}.*`` | ``mask_head.predict.{0,1}.*`` |

PaddleDetection registers three layers under two names each (``solov2_head.solo_kernel`` / ``solo_cate`` beside
``solov2_head.bbox_head.*``, ``mask_head.conv_pred`` beside ``mask_head.mask_feat_head.conv_pred.0``): its files hold
both copies, checked equal, and one is loaded. Its GroupNorm layers have no running statistics.
"""

from __future__ import annotations

import re

from instaseg.models.common.paddle_names import PADDLEDET_URL, PADDLEX_URL, first_rule
from instaseg.models.common.paddle_resnet import FPN, resnet_name
from instaseg.models.detector import KeyMap, PublishedWeights

URL = "https://download.openmmlab.com/mmdetection/v2.0/solov2/{0}/{0}_{1}.pth"
_PATTERNS = (
    (r"^backbone\.", "backbone.body."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"^mask_head\.(cls|kernel)_convs\.(\d+)\.conv\.", r"head.\1_convs.\2.0."),
    (r"^mask_head\.(cls|kernel)_convs\.(\d+)\.gn\.", r"head.\1_convs.\2.1."),
    (r"^mask_head\.conv_(cls|kernel)\.", r"head.conv_\1."),
    (r"^mask_head\.mask_feature_head\.convs_all_levels\.(\d+)\.conv(\d+)\.conv\.", r"mask_head.levels.\1.\2.0."),
    (r"^mask_head\.mask_feature_head\.convs_all_levels\.(\d+)\.conv(\d+)\.gn\.", r"mask_head.levels.\1.\2.1."),
    (r"^mask_head\.mask_feature_head\.conv_pred\.conv\.", "mask_head.predict.0."),
    (r"^mask_head\.mask_feature_head\.conv_pred\.gn\.", "mask_head.predict.1."),
)


def rename(name: str) -> str | None:
    """Our name for a tensor of an MMDetection SOLOv2 detector (unknown names come back unchanged, so the
    conversion reports them as having no place in our model)."""
    if name.startswith("data_preprocessor."):
        return None
    for pattern, ours in _PATTERNS:
        renamed, n = re.subn(pattern, ours, name)
        if n:
            return renamed
    return name


DETECTOR = KeyMap(rename=rename)

_PADDLE_HEADS = (
    (r"^solov2_head\.bbox_head\.kernel_convs\.", "head.kernel_convs."),
    (r"^solov2_head\.bbox_head\.cate_convs\.", "head.cls_convs."),
    (r"^solov2_head\.bbox_head\.solo_kernel\.", "head.conv_kernel."),
    (r"^solov2_head\.bbox_head\.solo_cate\.", "head.conv_cls."),
    (r"^mask_head\.conv_pre_feat(\d)\.mask_feat_head\.convs_all_levels\.\d\.conv(\d)\.", r"mask_head.levels.\1.\2."),
    (r"^mask_head\.mask_feat_head\.conv_pred\.0\.", "mask_head.predict."),
)
_CONV_NORM = ((r"\.conv\.(weight|bias)$", r".0.\1"), (r"\.norm\.(weight|bias)$", r".1.\1"))  # ConvNormLayer
# the second names of layers PaddleDetection registers twice -> the first
_PADDLE_COPIES = (
    (r"^solov2_head\.solo_(kernel|cate)\.", r"solov2_head.bbox_head.solo_\1."),
    (r"^mask_head\.conv_pred\.", "mask_head.mask_feat_head.conv_pred.0."),
)


def paddle_rename(name: str) -> str:
    """Our name for a tensor of a PaddleDetection SOLOv2 detector (unknown names come back unchanged)."""
    if name.startswith("backbone."):
        return "backbone.body." + resnet_name(name.removeprefix("backbone."), vd=False)
    if name.startswith(("solov2_head.bbox_head.", "mask_head.")):
        return first_rule(_CONV_NORM, first_rule(_PADDLE_HEADS, name))
    return first_rule(FPN, name)


def paddle_copy_of(name: str) -> str | None:
    original = first_rule(_PADDLE_COPIES, name)
    return None if original == name else original


PADDLE_DETECTOR = KeyMap(rename=paddle_rename, copy_of=paddle_copy_of)


def _coco(config: str, folder: str, suffix: str, mask_ap: float, note: str = "") -> PublishedWeights:
    return PublishedWeights(
        config,
        "coco",
        URL.format(folder, suffix),
        publisher="MMDetection",
        format="torch",
        model={"backbone": "resnet50"},
        key_map=DETECTOR,
        recipe="solov2_r50_fpn",
        mask_ap=mask_ap,
        note=note,
    )


def _paddle(name: str, url: str, publisher: str, mask_ap: float, note: str, config: str = "") -> PublishedWeights:
    return PublishedWeights(name, "coco", url, publisher=publisher, format="paddle", model={"backbone": "resnet50"},
                            key_map=PADDLE_DETECTOR, recipe="solov2_r50_fpn_paddlex", mask_ap=mask_ap, note=note,
                            config=config)  # fmt: skip


# the first match of the recipe's own is what --weights coco takes: for solov2_r50_fpn the 3x model, whose config it
# follows; for solov2_r50_fpn_paddlex PaddleX's SOLOv2
PUBLISHED: tuple[PublishedWeights, ...] = (
    _coco("solov2_r50_fpn_ms-3x_coco", "solov2_r50_fpn_3x_coco", "20220512_125856-fed092d4", 37.5),
    _coco("solov2_r50_fpn_1x_coco", "solov2_r50_fpn_1x_coco", "20220512_125858-a357fa23", 34.8, "the 1x schedule"),
    _paddle("SOLOv2", PADDLEX_URL.format("SOLOv2"), "PaddleX", 35.5, "", "solov2_r50_fpn_1x_coco"),
    _paddle("solov2_r50_fpn_1x_coco", PADDLEDET_URL.format("solov2_r50_fpn_1x_coco"), "PaddleDetection", 35.5,
            "the same model as PaddleX's SOLOv2"),
    _paddle("solov2_r50_fpn_3x_coco", PADDLEDET_URL.format("solov2_r50_fpn_3x_coco"), "PaddleDetection", 38.0,
            "the 3x multi-scale schedule, the same network"),
)  # fmt: skip
