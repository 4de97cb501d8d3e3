"""RTMDet-Ins weights MMDetection publishes, and how their tensor names become ours.

COCO models: MMDetection 3.3's ``configs/rtmdet/metafile.yml`` (RTMDet-Ins tiny to x); ImageNet backbones: the
CSPNeXt classifiers of ``configs/rtmdet/classification`` (mmpretrain checkpoints: ``backbone.*`` and a linear
head). The metrics are MMDetection's, on COCO val2017 and ImageNet-1k val.

The map (checked on every published layout by tests/test_published_weights.py):

| MMDetection | instaseg |
| --- | --- |
| ``backbone.stage{k}.*`` | ``backbone.stages.{k-1}.*`` |
| ``...conv2.depthwise_conv.*`` / ``...conv2.pointwise_conv.*`` | ``...conv2.0.*`` / ``...conv2.1.*`` |
| ``neck.reduce_layers / top_down_blocks / downsamples / bottom_up_blocks`` | ``neck.reduce / top_down / ...`` |
| ``bbox_head.*`` | ``head.*`` |
| ``bbox_head.reg_convs.*`` | copies of ``bbox_head.cls_convs.*`` (the head feeds one tower to both predictors) |

The detectors read BGR (``bgr_to_rgb=False``, BGR mean and std); ours read RGB with the same mean and std per
colour, so the first conv's input channels are reversed. The ImageNet classifiers were trained on RGB
(``to_rgb=True``): nothing to reverse.
"""

from __future__ import annotations

import re

import torch

from instaseg.models.detector import KeyMap, PublishedWeights

COCO_URL = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/{0}/{0}_{1}.pth"
IMAGENET_URL = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/cspnext_rsb_pretrain/{}.pth"
STEM = "backbone.stem.0.conv.weight"
_RENAMES = (
    (".conv2.depthwise_conv.", ".conv2.0."),
    (".conv2.pointwise_conv.", ".conv2.1."),
    ("neck.reduce_layers.", "neck.reduce."),
    ("neck.top_down_blocks.", "neck.top_down."),
    ("neck.downsamples.", "neck.downsample."),
    ("neck.bottom_up_blocks.", "neck.bottom_up."),
)


def rename(name: str) -> str | None:
    """Our name for a tensor of an MMDetection RTMDet-Ins detector or CSPNeXt backbone."""
    if name.startswith(("data_preprocessor.", "head.fc.")):  # buffers of no weight; the ImageNet classifier's layer
        return None
    name = re.sub(r"^backbone\.stage(\d)\.", lambda m: f"backbone.stages.{int(m.group(1)) - 1}.", name)
    for theirs, ours in _RENAMES:
        name = name.replace(theirs, ours)
    return "head." + name[len("bbox_head.") :] if name.startswith("bbox_head.") else name


def copy_of(name: str) -> str | None:
    """MMDetection's RTMDetInsSepBNHead appends ``cls_convs[n]`` to ``reg_convs`` too, so every
    ``bbox_head.reg_convs.*`` tensor repeats the ``bbox_head.cls_convs.*`` one."""
    if name.startswith("bbox_head.reg_convs."):
        return "bbox_head.cls_convs." + name[len("bbox_head.reg_convs.") :]
    return None


def bgr_to_rgb(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flip(1) if name == STEM else tensor


DETECTOR = KeyMap(rename=rename, copy_of=copy_of, adapt=bgr_to_rgb)
BACKBONE = KeyMap(rename=rename, scope="backbone.")

# size -> (COCO file suffix, box AP, mask AP, ImageNet file, top-1, config batch)
_SIZES = {
    "tiny": ("20221130_151727-ec670f7e", 40.5, 35.4, "cspnext-tiny_imagenet_600e-3a2dd350", 69.44, "8xb32"),
    "s": ("20221121_212604-fdc5d7ec", 44.0, 38.7, "cspnext-s_imagenet_600e-ea671761", 74.41, "8xb32"),
    "m": ("20221123_001039-6eba602e", 48.8, 42.1, "cspnext-m_8xb256-rsb-a1-600e_in1k-ecb3bbd9", 79.27, "8xb32"),
    "l": ("20221124_103237-78d1d652", 51.2, 43.7, "cspnext-l_8xb256-rsb-a1-600e_in1k-6a760974", 81.30, "8xb32"),
    "x": ("20221124_111313-33d4595b", 52.4, 44.6, "cspnext-x_8xb256-rsb-a1-600e_in1k-b3f78edd", 82.10, "8xb16"),
}


def _weights(size: str) -> tuple[PublishedWeights, PublishedWeights]:
    suffix, box_ap, mask_ap, imagenet, top1, batch = _SIZES[size]
    config = f"rtmdet-ins_{size}_{batch}-300e_coco"
    model = {"backbone": f"cspnext_{size}"}
    common = {"publisher": "MMDetection", "format": "torch", "model": model, "recipe": f"rtmdet_ins_{size}"}
    coco = PublishedWeights(config, "coco", COCO_URL.format(config, suffix), key_map=DETECTOR, box_ap=box_ap,
                            mask_ap=mask_ap, **common)  # fmt: skip
    note = "" if size in ("tiny", "s") else "the published config of this size trains from scratch"
    classifier = f"cspnext-{size}_8xb256-rsb-a1-600e_in1k"  # configs/rtmdet/classification
    backbone = PublishedWeights(imagenet, "imagenet", IMAGENET_URL.format(imagenet), key_map=BACKBONE, top1=top1,
                                num_classes=1000, config=classifier, note=note, **common)  # fmt: skip
    return coco, backbone


PUBLISHED: tuple[PublishedWeights, ...] = tuple(w for size in _SIZES for w in _weights(size))
