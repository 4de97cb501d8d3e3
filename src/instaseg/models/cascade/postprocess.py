"""Which of the cascade's scored boxes become detections: one function, eager and exported.

The rule is torchvision's `RoIHeads.postprocess_detections` (a box per class scoring above the threshold, at
least 0.01 px wide and tall, NMS within each class, the best ``max_dets`` by score) with the cascade's one box per
RoI shared by all classes. NMS within each class is Mask R-CNN's `PerClassNMS`: eager it is torchvision's
``batched_nms``; exported it is ONE ONNX NonMaxSuppression whose batches are the classes (see
`instaseg.models.maskrcnn.export` for why). No Python loop over detections, and zero detections stay valid.
"""

from __future__ import annotations

import torch

from instaseg.models.maskrcnn.export import PerClassNMS


def select_detections(
    boxes: torch.Tensor, probs: torch.Tensor, score_thresh: float, nms_thresh: float, max_dets: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``boxes`` [N,4] and class probabilities ``probs`` [N,K+1] (column 0 background) of one image ->
    (boxes [M,4], scores [M], labels [M] int64 in 1..K) with M <= ``max_dets``."""
    scores = probs[:, 1:]  # [N,K]
    wide = ((boxes[:, 2] - boxes[:, 0]) >= 1e-2) & ((boxes[:, 3] - boxes[:, 1]) >= 1e-2)
    scores = torch.where(wide[:, None], scores, torch.full_like(scores, -1.0))  # below any score threshold
    per_class = boxes[None].expand(scores.shape[1], -1, -1)  # [K,N,4]: the same box for every class
    kept = PerClassNMS.apply(per_class, scores.transpose(0, 1), nms_thresh, score_thresh)
    cls, proposal = kept[:, 0], kept[:, 2]
    order = torch.argsort(scores[proposal, cls], descending=True)[:max_dets]
    cls, proposal = cls[order], proposal[order]
    return boxes[proposal], scores[proposal, cls], cls + 1
