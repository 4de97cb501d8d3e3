"""Inference of PP-YOLOE-seg: scores -> top candidates -> class-aware NMS -> prototype masks cut to the box.

One code path for eager and exported graphs (TopK, boolean indexing, NonMaxSuppression, MatMul), so the ONNX and
OpenVINO models run what the eager model runs; zero detections stay valid shapes throughout.
"""

from __future__ import annotations

import torch

from instaseg.models.detector import clip_boxes
from instaseg.models.ppyoloe_seg.head import crop_to_boxes
from instaseg.models.rtmdet_ins.detect import class_separated_nms


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
    NMS); the best ``nms_pre`` go through class-aware NMS and the best ``max_dets`` survivors get masks. A mask
    is zeroed one stride beyond its box: the paste to full size cuts it at the box exactly, and the margin keeps
    the bilinear resampling at the box edge from reading zeros."""
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    top_scores, top_idx = flat.topk(min(int(cfg["nms_pre"]), flat.shape[0]))
    keep = top_scores > cfg["score_threshold"]
    top_scores, top_idx = top_scores[keep], top_idx[keep]
    point = torch.div(top_idx, num_classes, rounding_mode="floor")
    label = top_idx - point * num_classes
    cand_boxes = boxes[point]
    kept = class_separated_nms(cand_boxes, top_scores, label, cfg["nms_iou"], boxes.abs().max())
    kept = kept[: int(cfg["max_dets"])]
    point = point[kept]
    out_boxes = clip_boxes(cand_boxes[kept], image_size[0], image_size[1])
    m, h, w = prototypes.shape
    probs = (coefficients[point] @ prototypes.reshape(m, h * w)).sigmoid().reshape(-1, h, w)
    masks = crop_to_boxes(probs, out_boxes, mask_stride, margin=float(mask_stride))
    return out_boxes, top_scores[kept], label[kept] + 1, masks
