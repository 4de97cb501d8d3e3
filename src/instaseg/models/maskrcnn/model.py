"""Mask R-CNN on the detector contract: torchvision's `MaskRCNN` with its raw inference path stated once.

torchvision's forward ends in `transform.postprocess`, which pastes every mask at full image size (N x H x W
floats). `raw_forward` runs the same components (backbone -> rpn -> roi_heads) and stops before that step:
roi_heads already gives each instance's 28x28 mask probabilities, which the shared post-processing pastes one
box at a time. The exported graph is the same path for one image (`export_forward`).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext

import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

from instaseg.models.detector import Detector, InputSpec, RawOutput
from instaseg.models.maskrcnn.export import MaskRoIHeads, tracing_functions


class MaskRCNNDetector(MaskRCNN, Detector):
    """torchvision's MaskRCNN (same modules, same state_dict keys) plus the `Detector` interface."""

    mask_stride = None  # masks [N,28,28] span their own boxes

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the same RoI heads object, as the subclass whose box post-processing exports well; it adds no state
        self.roi_heads.__class__ = MaskRoIHeads

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.of_transform(self.transform)

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        features = self.backbone(batch)
        if isinstance(features, torch.Tensor):  # single-map (C4) backbones, as GeneralizedRCNN.forward allows
            features = OrderedDict([("0", features)])
        images = ImageList(batch, list(image_sizes))
        proposals, _ = self.rpn(images, features)
        detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        return [RawOutput(d["boxes"], d["scores"], d["labels"], d["masks"][:, 0]) for d in detections]

    def export_forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the size stays a tensor: box clipping then follows each call's image, not the tracing example's
        with tracing_functions() if torch.onnx.is_in_onnx_export() else nullcontext():
            return tuple(self.raw_forward(images, [(image_size[0], image_size[1])])[0])

    def make_outputs_busy(self) -> None:
        busy_mask_logits(self.roi_heads.mask_predictor)


def busy_mask_logits(mask_predictor: torch.nn.Module) -> None:
    """Per-box mask logits near 0.5 probability: random-init masks come out partly filled, as trained ones do."""
    with torch.no_grad():
        mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        mask_predictor.mask_fcn_logits.bias.add_(0.8)
