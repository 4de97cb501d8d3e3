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

import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops import poolers

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


class PerClassNMS(torch.autograd.Function):
    """NMS within each class as ONE ONNX NonMaxSuppression whose batches are the classes.

    ``boxes`` [K,N,4] and ``scores`` [K,N] (class k's box and score for proposal n); boxes scoring at most
    ``score_threshold`` take no part. Returns [M,3] int64 rows (class, 0, proposal) as the ONNX op does.
    Why: the shifted-boxes trick of `batched_nms` puts every class's boxes into one NMS of K*N boxes, and ONNX
    Runtime's NMS is quadratic in that: 90 classes x 1000 proposals took 3.7 s there, against 0.13 s as 90
    batches of 1000 (and 0.28 s in torch).
    """

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold: float, score_threshold: float):  # the eager value, for tracing
        n = scores.shape[1]
        flat = torch.nonzero(scores.reshape(-1) > score_threshold).squeeze(1)
        keep = flat[box_ops.batched_nms(boxes.reshape(-1, 4)[flat], scores.reshape(-1)[flat], flat // n, iou_threshold)]
        cls, proposal = keep // n, keep % n
        return torch.stack([cls, torch.zeros_like(cls), proposal], dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        scores = g.op("Unsqueeze", scores, const(1, torch.long))  # [K,1,N]: one "class" per batch
        max_per_class = const(sys.maxsize, torch.long)  # as torchvision's own nms symbolic: no cap
        iou, threshold = const(iou_threshold, torch.float), const(score_threshold, torch.float)
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou, threshold)


def postprocess_detections(self: RoIHeads, class_logits, box_regression, proposals, image_shapes):
    """torchvision's `RoIHeads.postprocess_detections` for the one image of the graph, with the per-class NMS
    run as `PerClassNMS`. Same detections: score above the threshold, boxes of at least 0.01 px, NMS within each
    class, the best ``detections_per_img`` by score."""
    boxes = box_ops.clip_boxes_to_image(self.box_coder.decode(box_regression, proposals), image_shapes[0])
    boxes, scores = boxes[:, 1:], F.softmax(class_logits, -1)[:, 1:]  # [N,K,4], [N,K]: background dropped
    big_enough = ((boxes[..., 2] - boxes[..., 0]) >= 1e-2) & ((boxes[..., 3] - boxes[..., 1]) >= 1e-2)
    scores = torch.where(big_enough, scores, torch.full_like(scores, -1.0))  # below any score threshold
    kept = PerClassNMS.apply(boxes.transpose(0, 1), scores.transpose(0, 1), self.nms_thresh, self.score_thresh)
    cls, proposal = kept[:, 0], kept[:, 2]
    order = torch.argsort(scores[proposal, cls], descending=True)[: self.detections_per_img]
    cls, proposal = cls[order], proposal[order]
    return [boxes[proposal, cls]], [scores[proposal, cls]], [cls + 1]


def merge_levels(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's `_onnx_merge_levels` (RoIs pooled level by level, put back in RoI order) as one row gather.

    torchvision scatters each level's [n,C,7,7] block into a zero tensor through an index expanded to every
    element; in ONNX Runtime those ScatterElements took 160 ms of a ResNet-50-FPN image (1000 RoIs), a gather of
    whole rows a few."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])
    return torch.cat(per_level)[torch.argsort(order)]


@contextmanager
def export_patches() -> Iterator[None]:
    """While tracing: torchvision's RPN calls `box_ops.batched_nms`, so use the empty-safe one; the box head's
    post-processing runs its NMS per class in one batched op; pooled RoIs are merged by a gather."""
    saved = box_ops.batched_nms, RoIHeads.postprocess_detections, poolers._onnx_merge_levels
    box_ops.batched_nms = class_separated_nms
    RoIHeads.postprocess_detections = postprocess_detections
    poolers._onnx_merge_levels = merge_levels
    try:
        yield
    finally:
        box_ops.batched_nms, RoIHeads.postprocess_detections, poolers._onnx_merge_levels = saved
