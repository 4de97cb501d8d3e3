"""Cascade Mask R-CNN on the detector contract: transform -> backbone + FPN -> RPN -> cascade RoI heads.

The same composition as torchvision's `GeneralizedRCNN` (and so the same module names for the backbone and the
RPN: a torchvision Mask R-CNN checkpoint initialises them, and the mask head, by name). ``raw_forward`` stops at
each box's 28x28 mask probabilities; the shared post-processing pastes them. The exported graph is the same path
for one image, with Mask R-CNN's two export-friendly torchvision functions swapped in while it is traced.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from instaseg.models.cascade.roi_heads import CascadeRoIHeads
from instaseg.models.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputSpec, RawOutput
from instaseg.models.maskrcnn.export import tracing_functions
from instaseg.models.maskrcnn.model import busy_mask_logits


class CascadeMaskRCNN(Detector):
    mask_stride = None  # masks [N,28,28] span their own boxes

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: CascadeRoIHeads,
        min_size: int,
        max_size: int,
    ):
        super().__init__()
        self.transform = GeneralizedRCNNTransform(
            min_size, max_size, list(IMAGENET_MEAN), list(IMAGENET_STD), size_divisible=32
        )
        self.backbone, self.rpn, self.roi_heads = backbone, rpn, roi_heads

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.of_transform(self.transform)

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
            for d in self.roi_heads.detect(features, proposals, image_list.image_sizes)
        ]
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        features = self.backbone(batch)
        images = ImageList(batch, list(image_sizes))
        proposals, _ = self.rpn(images, features)
        return self.roi_heads.detect(features, proposals, images.image_sizes)

    def export_forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the size stays a tensor: box clipping then follows each call's image, not the tracing example's
        with tracing_functions() if torch.onnx.is_in_onnx_export() else nullcontext():
            return tuple(self.raw_forward(images, [(image_size[0], image_size[1])])[0])

    def make_outputs_busy(self) -> None:
        busy_mask_logits(self.roi_heads.mask_predictor)
