"""Inference of Mask-RT-DETR: no NMS (the set loss taught one query per object); the best ``max_dets`` (query,
class) pairs by score, those above ``score_threshold`` kept, boxes scaled to input pixels and clipped."""

from __future__ import annotations

import torch

from instaseg.models.detector import clip_boxes
from instaseg.models.mask_rtdetr.assigner import cxcywh_to_xyxy


def detect_single(
    logits: torch.Tensor,  # [Q, K] class logits of the last decoder layer
    boxes: torch.Tensor,  # [Q, 4] (cx, cy, w, h) normalised to the padded input
    masks: torch.Tensor,  # [Q, H/4, W/4] mask logits over the padded input
    scale: torch.Tensor,  # [4] (W, H, W, H) of the padded input
    image_size: tuple,  # (h, w) inside the padded input: Python ints or traced 0-d tensors
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4] clipped to the image, scores [N], labels [N] 1..K, mask logits [N,H/4,W/4])."""
    num_classes = logits.shape[1]
    scores = logits.sigmoid()
    k = min(int(cfg["max_dets"]), scores.numel())
    top_scores, top = scores.flatten().topk(k)
    keep = top_scores > cfg["score_threshold"]
    top_scores, top = top_scores[keep], top[keep]
    query = torch.div(top, num_classes, rounding_mode="floor")
    labels = top - query * num_classes + 1
    out_boxes = clip_boxes(cxcywh_to_xyxy(boxes[query]) * scale, image_size[0], image_size[1])
    return out_boxes, top_scores, labels, masks[query]
