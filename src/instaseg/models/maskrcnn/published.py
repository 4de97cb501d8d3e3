"""Mask R-CNN weights PaddleX and PaddleDetection publish, and how their tensor names become ours.

PaddleX's instance-segmentation list holds six Mask R-CNNs; each is PaddleDetection's ``configs/mask_rcnn`` 1x
config of the same backbone (PaddleX's model section equals the config's), and PaddleDetection publishes that
config's model too. ``--weights coco`` takes PaddleX's file, ``--weights imagenet`` the ImageNet backbone the config
starts from (``pretrain_weights``). PaddleX's R50-FPN belongs to ``maskrcnn_r50_fpn_paddlex``; ``maskrcnn_r50_fpn``
(the same network with torchvision's conventions) takes torchvision's checkpoint for ``coco`` and PaddleX's file by
its name. Box / mask AP are PaddleDetection's model-zoo figures on COCO val2017, which PaddleX repeats.

The map is `instaseg.models.common.paddle_rcnn` (its table; ResNet and FPN names in
`instaseg.models.common.paddle_resnet`), checked on every published layout by tests/test_paddle_weights.py. Every
tensor of the file is used and every tensor of ours is set; torchvision's background slots of the class-wise box
regressor (4 rows) and of the mask predictor (1 mask), which Paddle's layers do not have, are filled with zeros
(neither inference nor training reads them). PaddleDetection's defaults differ from torchvision's in a few
conventions (anchor centres, RoIAlign alignment and sampling, RPN minimum size, smooth-L1 betas, mask pasting); the
model-section switches ``anchors: exact``, ``roi_align_aligned: true``, ``roi_sampling_ratio: 0``,
``rpn_min_size: 1.0``, ``rpn_box_loss_beta: 0``, ``box_loss_beta: 0``, ``mask_paste: exact`` reproduce them, and the
recipes named here set them (docs/equivalence.md measures both).
"""

from __future__ import annotations

from instaseg.models.common.paddle_rcnn import paddle_rcnn_weights
from instaseg.models.detector import PublishedWeights

_FPN = {"fpn": True, "box_head": "mlp"}  # PaddleDetection's FPN design: two fc layers (not torchvision's v2 head)
# recipe: PaddleX name, PaddleDetection config, (box AP, mask AP), ImageNet start, model section
_MODELS = {
    "maskrcnn_r50_c4": ("MaskRCNN-ResNet50", "mask_rcnn_r50_1x_coco", (37.4, 32.8), "ResNet50_cos_pretrained",
                        {"backbone": "resnet50", "fpn": False}),
    "maskrcnn_r50_fpn_paddlex": ("MaskRCNN-ResNet50-FPN", "mask_rcnn_r50_fpn_1x_coco", (39.2, 35.6),
                                 "ResNet50_cos_pretrained", {"backbone": "resnet50", **_FPN}),
    "maskrcnn_r50vd_fpn": ("MaskRCNN-ResNet50-vd-FPN", "mask_rcnn_r50_vd_fpn_1x_coco", (40.3, 36.4),
                           "ResNet50_vd_pretrained", {"backbone": "resnet50d", **_FPN}),
    "maskrcnn_r101_fpn": ("MaskRCNN-ResNet101-FPN", "mask_rcnn_r101_fpn_1x_coco", (40.6, 36.6),
                          "ResNet101_pretrained", {"backbone": "resnet101", **_FPN}),
    "maskrcnn_r101vd_fpn": ("MaskRCNN-ResNet101-vd-FPN", "mask_rcnn_r101_vd_fpn_1x_coco", (42.4, 38.1),
                            "ResNet101_vd_pretrained", {"backbone": "resnet101d", **_FPN}),
    "maskrcnn_x101vd_fpn": ("MaskRCNN-ResNeXt101-vd-FPN", "mask_rcnn_x101_vd_64x4d_fpn_1x_coco", (44.0, 39.5),
                            "ResNeXt101_vd_64x4d_pretrained", {"backbone": "resnext101_64x4d_vd", **_FPN}),
}  # fmt: skip
PUBLISHED: tuple[PublishedWeights, ...] = tuple(
    w for recipe, entry in _MODELS.items() for w in paddle_rcnn_weights(recipe, *entry)
)
