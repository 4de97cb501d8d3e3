"""SOLOv2 weights MMDetection publishes, and how their tensor names become ours.

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
"""

from __future__ import annotations

import re

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


# the first match is what --weights coco takes: the 3x model, whose config the recipe follows
PUBLISHED: tuple[PublishedWeights, ...] = (
    _coco("solov2_r50_fpn_ms-3x_coco", "solov2_r50_fpn_3x_coco", "20220512_125856-fed092d4", 37.5),
    _coco("solov2_r50_fpn_1x_coco", "solov2_r50_fpn_1x_coco", "20220512_125858-a357fa23", 34.8, "the 1x schedule"),
)
