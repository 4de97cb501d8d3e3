"""Inference of PP-YOLOE-seg: scores -> top candidates -> class-aware NMS -> prototype masks cut to the box.

One code path for eager and exported graphs (TopK, boolean indexing, NonMaxSuppression, MatMul), so the ONNX and
OpenVINO models run what the eager model runs; zero detections stay valid shapes throughout.
"""

from __future__ import annotations

import torch

from instaseg.models.common.nms import select_detections
from instaseg.models.detector import clip_boxes
from instaseg.models.ppyoloe_seg.heads import crop_to_boxes


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
    point, out_boxes, out_scores, labels = select_detections(scores, boxes, cfg)
    out_boxes = clip_boxes(out_boxes, image_size[0], image_size[1])
    m, h, w = prototypes.shape
    probs = (coefficients[point] @ prototypes.reshape(m, h * w)).sigmoid().reshape(-1, h, w)
    masks = crop_to_boxes(probs, out_boxes, mask_stride, margin=float(mask_stride))
    return out_boxes, out_scores, labels, masks
