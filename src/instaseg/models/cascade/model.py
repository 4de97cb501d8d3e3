"""Cascade Mask R-CNN on the detector contract: transform -> backbone + FPN -> RPN -> cascade RoI heads.

The same composition as torchvision's `GeneralizedRCNN` (`instaseg.models.common.rcnn.TwoStageDetector`, and so the
same module names for the backbone and the RPN: a torchvision Mask R-CNN checkpoint initialises them, and the mask
head, by name). ``raw_forward`` stops at each box's 28x28 mask probabilities; the shared post-processing pastes them.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.rpn import RegionProposalNetwork

from instaseg.models.cascade.heads import CascadeRoIHeads
from instaseg.models.common.rcnn import TwoStageDetector
from instaseg.models.detector import QuantizationSettings, RawOutput


class CascadeMaskRCNN(TwoStageDetector):
    quantization = QuantizationSettings(
        why="Mask R-CNN's settings (same RoI-pooled heads, box decoding and mask pasting arithmetic, which stay in "
        "float); the fast recipe, plain INT8 on two seeds, mask AP on 400 held-out pictures (bench/int8_accuracy.py): "
        "76.6 -> 76.5 and 76.0 -> 75.8, network 2.0x fp32's speed"
    )

    def __init__(
        self, transform: nn.Module, backbone: nn.Module, rpn: RegionProposalNetwork, roi_heads: CascadeRoIHeads
    ):
        super().__init__()
        self.transform, self.backbone, self.rpn, self.roi_heads = transform, backbone, rpn, roi_heads

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """Training: a dict of losses. Evaluation: torchvision's detections, masks pasted at each image's size."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        if self.training:
            return {**rpn_losses, **self.roi_heads.losses(features, proposals, image_list.image_sizes, targets)}
        detections = [
            {"boxes": d.boxes, "scores": d.scores, "labels": d.labels, "masks": d.masks[:, None]}
            for d in self.detect(features, proposals, image_list.image_sizes)
        ]
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def detect(self, features, proposals: list[torch.Tensor], image_sizes) -> list[RawOutput]:
        return self.roi_heads.detect(features, proposals, image_sizes)
