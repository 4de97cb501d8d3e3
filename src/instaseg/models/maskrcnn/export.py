"""Mask R-CNN's exported graph: torchvision's box post-processing and RoI-level merge in forms that export well.

Why each piece:
- `PerClassNMS`: torchvision's `batched_nms` shifts every class's boxes apart into one NMS of K*N boxes, and ONNX
  Runtime's NMS is quadratic in that (90 classes x 1000 proposals: 3.7 s, against 0.13 s as 90 batches of 1000
  and 0.28 s in torch). Exported, NMS within each class is one NonMaxSuppression whose batches are the classes.
- `class_separated_nms`: torchvision's ``boxes + offsets[:, None]`` turns "no box left" into one stale row in
  OpenVINO (its CPU plugin broadcasts [0,4] + [0,1] to one row); shifting column by column adds equal shapes.
- `merge_levels`: torchvision scatters each level's pooled RoIs into a zero tensor through an index expanded to
  every element; in ONNX Runtime that took 160 ms of a ResNet-50-FPN image (1000 RoIs), a gather of rows a few.

`MaskRoIHeads.postprocess_detections` uses the per-class form only while exporting; `tracing_functions` swaps the
other two into torchvision's modules while `MaskRCNNDetector.export_forward` is traced for export, and only then
(eager calls, e.g. counting FLOPs, run torchvision's own).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops import poolers
from torchvision.ops.boxes import batched_nms as torchvision_batched_nms  # bound before any swap below


def class_separated_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    """torchvision's `batched_nms` (NMS within each class: boxes shifted apart by class), empty-safe in OpenVINO
    (and in eager mode: the largest coordinate of no box is 0)."""
    offsets = idxs.to(boxes.dtype) * (torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max() + 1)
    shifted = torch.stack([boxes[:, i] + offsets for i in range(4)], dim=1)
    return box_ops.nms(shifted, scores, iou_threshold)


class PerClassNMS(torch.autograd.Function):
    """NMS within each class as ONE ONNX NonMaxSuppression whose batches are the classes.

    ``boxes`` [K,N,4] and ``scores`` [K,N] (class k's box and score for proposal n); boxes scoring at most
    ``score_threshold`` take no part. Returns [M,3] int64 rows (class, 0, proposal) as the ONNX op does.
    """

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold: float, score_threshold: float):  # the eager value, for tracing
        n = scores.shape[1]
        flat = torch.nonzero(scores.reshape(-1) > score_threshold).squeeze(1)
        kept = torchvision_batched_nms(boxes.reshape(-1, 4)[flat], scores.reshape(-1)[flat], flat // n, iou_threshold)
        keep = flat[kept]
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


def per_class_postprocess(heads: RoIHeads, class_logits, box_regression, proposals, image_shapes):
    """torchvision's `RoIHeads.postprocess_detections` for one image, with the per-class NMS as `PerClassNMS`.
    Same detections: score above the threshold, boxes of at least 0.01 px, NMS within each class, the best
    ``detections_per_img`` by score."""
    boxes = box_ops.clip_boxes_to_image(heads.box_coder.decode(box_regression, proposals), image_shapes[0])
    boxes, scores = boxes[:, 1:], F.softmax(class_logits, -1)[:, 1:]  # [N,K,4], [N,K]: background dropped
    big_enough = ((boxes[..., 2] - boxes[..., 0]) >= 1e-2) & ((boxes[..., 3] - boxes[..., 1]) >= 1e-2)
    scores = torch.where(big_enough, scores, torch.full_like(scores, -1.0))  # below any score threshold
    kept = PerClassNMS.apply(boxes.transpose(0, 1), scores.transpose(0, 1), heads.nms_thresh, heads.score_thresh)
    cls, proposal = kept[:, 0], kept[:, 2]
    order = torch.argsort(scores[proposal, cls], descending=True)[: heads.detections_per_img]
    cls, proposal = cls[order], proposal[order]
    return [boxes[proposal, cls]], [scores[proposal, cls]], [cls + 1]


class MaskRoIHeads(RoIHeads):
    """torchvision's RoIHeads whose box post-processing exports as `per_class_postprocess`."""

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        if torch.onnx.is_in_onnx_export():
            return per_class_postprocess(self, class_logits, box_regression, proposals, image_shapes)
        return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)


def merge_levels(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's `_onnx_merge_levels` (RoIs pooled level by level, put back in RoI order) as one row gather."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])
    return torch.cat(per_level)[torch.argsort(order)]


@contextmanager
def tracing_functions() -> Iterator[None]:
    """While the graph is traced: the RPN's `batched_nms` is the empty-safe one, pooled RoIs merge by a gather.
    Both are module functions torchvision looks up at call time; nothing else is replaced."""
    saved = box_ops.batched_nms, poolers._onnx_merge_levels
    box_ops.batched_nms, poolers._onnx_merge_levels = class_separated_nms, merge_levels
    try:
        yield
    finally:
        box_ops.batched_nms, poolers._onnx_merge_levels = saved
