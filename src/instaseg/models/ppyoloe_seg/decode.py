"""Inference of PP-YOLOE-seg: scores -> each class's top candidates -> NMS within each class -> prototype masks cut
to the box.

One code path for eager and exported graphs (TopK, boolean indexing, NonMaxSuppression, MatMul), so the ONNX and
OpenVINO models run what the eager model runs; zero detections stay valid shapes throughout.
"""

from __future__ import annotations

import torch

from instaseg.models.common.nms import class_separated_nms
from instaseg.models.detector import clip_boxes
from instaseg.models.ppyoloe_seg.heads import crop_to_boxes


def select_per_class(
    scores: torch.Tensor, boxes: torch.Tensor, cfg: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(point index, box, score, label 1..K) of the detections PaddleDetection's MultiClassNMS keeps from per-point
    class scores [A,K] and boxes [A,4]: per class, the best ``nms_pre`` points scoring above ``score_threshold``,
    NMS within the class at ``nms_iou``, then the best ``max_dets`` of all classes. Traceable, none kept included.

    Per class, not over all classes: a cap on all (point, class) pairs drops a busy picture's low-scored
    candidates of every class whose survivors PaddleDetection keeps (and COCO counts: its 100 detections per
    image are per category)."""
    num_points, num_classes = scores.shape
    k = min(int(cfg["nms_pre"]), num_points)
    top_scores, top_points = scores.t().topk(k, dim=1)  # [K, k], each class's best points
    labels = torch.arange(num_classes, device=scores.device)[:, None].expand(-1, k)
    top_scores, top_points, labels = top_scores.reshape(-1), top_points.reshape(-1), labels.reshape(-1)
    keep = top_scores > cfg["score_threshold"]
    top_scores, point, label = top_scores[keep], top_points[keep], labels[keep]
    cand_boxes = boxes[point]
    kept = class_separated_nms(cand_boxes, top_scores, label, cfg["nms_iou"], boxes.abs().max())
    kept = kept[: int(cfg["max_dets"])]
    return point[kept], cand_boxes[kept], top_scores[kept], label[kept] + 1


def detect_single(
    scores: torch.Tensor,  # [A, K] probabilities
    boxes: torch.Tensor,  # [A, 4] xyxy, network-input pixels
    coefficients: torch.Tensor,  # [A, M]
    prototypes: torch.Tensor,  # [M, h, w]
    image_size: tuple,  # (h, w) of the image inside the padded input: Python ints or traced 0-d tensors
    mask_stride: int,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4] clipped to the image, scores [N], labels [N] 1..K, mask probabilities [N,h,w] over the padded
    input at ``mask_stride``).

    Every (point, class) pair above the score threshold is a candidate (multi-label, as PP-YOLOE's multi-class
    NMS); per class the best ``nms_pre`` go through NMS and the best ``max_dets`` survivors get masks. A mask
    is zeroed one stride beyond its box: the paste to full size cuts it at the box exactly, and the margin keeps
    the bilinear resampling at the box edge from reading zeros."""
    point, out_boxes, out_scores, labels = select_per_class(scores, boxes, cfg)
    out_boxes = clip_boxes(out_boxes, image_size[0], image_size[1])
    m, h, w = prototypes.shape
    probs = (coefficients[point] @ prototypes.reshape(m, h * w)).sigmoid().reshape(-1, h, w)
    masks = crop_to_boxes(probs, out_boxes, mask_stride, margin=float(mask_stride))
    return out_boxes, out_scores, labels, masks
