"""The exported network: backbone -> rpn -> roi_heads on one pre-processed image, masks left at low resolution.

Why this cut: torchvision's full forward also resizes (pre-processing) and pastes every mask at full image size
(post-processing). Both stay outside the graph and are shared with the eager backend
(`instaseg.inference.preprocess`, `instaseg.inference.postprocess`): pasting in the graph is the slow part of
exported Mask R-CNNs and its loop is what trips exporters, and one pre/post-processing for every backend is what
makes parity hold by construction.

Why one image per call: torchvision's RPN and box post-processing loop over the images of a batch in Python; a
traced graph unrolls that loop, fixing the batch size and (with one output per image) the output layout. A graph
for one image has fixed output names (boxes, scores, labels, masks) whose first dimension is the number of
detections, zero included. The backends loop over a batch, giving each image only its own padding, exactly as the
eager model sees a batch of one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

INPUT_NAMES = ("images", "image_size")
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")


class DetectorGraph(nn.Module):
    """Wraps a torchvision-style Mask R-CNN (attributes backbone, rpn, roi_heads) for export.

    ``forward(images [1,3,H,W] normalised and padded, image_size int64 [2] = (h, w) before padding)`` returns
    boxes [N,4] xyxy in the resized frame (clipped to ``image_size``), scores [N], labels [N] int64 (1..K) and
    masks [N,M,M] probabilities: the `RawDetections` the eager backend produces.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if hasattr(model, "forward_raw"):  # one-stage models export their own raw outputs (RTMDet-Ins)
            self.model = model
            return
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if hasattr(self, "model"):
            return self.model.forward_raw(images, image_size)
        features = self.backbone(images)
        if isinstance(features, torch.Tensor):  # single-map (C4) backbones
            features = OrderedDict([("0", features)])
        # the size stays a tensor: box clipping then follows each call's image, not the example's
        image_list = ImageList(images, [(image_size[0], image_size[1])])
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        det = detections[0]
        return det["boxes"], det["scores"], det["labels"], det["masks"][:, 0]


def padded_size(size: int, stride: int) -> int:
    """``size`` rounded up to a multiple of ``stride`` (the padding the pre-processing applies)."""
    return -(-int(size) // stride) * stride


def class_separated_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    """torchvision's `batched_nms` (NMS within each class: boxes shifted apart by class) written so that an empty
    input stays empty in OpenVINO: its CPU plugin broadcasts [0,4] + [0,1] to one row, so torchvision's
    ``boxes + offsets[:, None]`` turns "no box left" into one stale detection. Shifting column by column adds
    tensors of equal shape only."""
    offsets = idxs.to(boxes.dtype) * (boxes.max() + 1)
    shifted = torch.stack([boxes[:, i] + offsets for i in range(4)], dim=1)
    return box_ops.nms(shifted, scores, iou_threshold)


@contextmanager
def export_patches() -> Iterator[None]:
    """While tracing: torchvision's RPN and box heads call `box_ops.batched_nms`; use the empty-safe one."""
    original = box_ops.batched_nms
    box_ops.batched_nms = class_separated_nms
    try:
        yield
    finally:
        box_ops.batched_nms = original
