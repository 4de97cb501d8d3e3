"""Inference of RTMDet-Ins, as MMDetection's ``RTMDetInsHead.predict_by_feat``: on each pyramid level the best
``nms_pre`` (point, class) pairs above the score threshold, boxes clipped to the frame and empty ones dropped,
class-aware NMS over all levels, ``max_dets`` survivors, then their dynamic masks.

Written once for eager and exported graphs: every step is a tensor op that ONNX expresses (TopK, NonZero via
boolean indexing, NonMaxSuppression, MatMul). Levels are selected one by one on their own maps, so no level
boundary is computed from a size: the exported graph stays valid at any input size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from instaseg.models.common.nms import nms_kept
from instaseg.models.detector import clip_boxes
from instaseg.models.rtmdet_ins.heads import dynamic_mask_logits


def level_candidates(
    scores: torch.Tensor, tensors: list[torch.Tensor], nms_pre: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(scores [M], labels [M] 0..K-1, each of ``tensors`` [A,...] taken at the M points) of one level's best
    ``nms_pre`` (point, class) pairs by score [A,K] (MMDetection's ``filter_scores_and_topk`` per level)."""
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    top, index = flat.topk(min(nms_pre, flat.shape[0]))
    point = torch.div(index, num_classes, rounding_mode="floor")
    return top, index - point * num_classes, [t[point] for t in tensors]


def detect_single(
    scores: list[torch.Tensor],  # per level [A_l, K] probabilities
    boxes: list[torch.Tensor],  # per level [A_l, 4]
    kernels_at: Callable[[torch.Tensor], torch.Tensor],  # kept priors [N,3] -> their kernels [N,P]
    priors: list[torch.Tensor],  # per level [A_l, 3]
    prototypes: torch.Tensor,  # [C, h, w]
    frame: tuple,  # (h, w) boxes are clipped to: Python ints or traced 0-d tensors
    head,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4] clipped to ``frame``, scores [N], labels [N] 1..K, mask logits [N,h,w] at the prototype
    stride) of one image."""
    levels = zip(scores, boxes, priors, strict=True)
    found = [level_candidates(s, [b, p], int(cfg["nms_pre"])) for s, b, p in levels]
    cand_scores = torch.cat([f[0] for f in found])
    labels = torch.cat([f[1] for f in found])
    cand_boxes, cand_priors = (torch.cat([f[2][i] for f in found]) for i in range(2))
    cand_boxes = clip_boxes(cand_boxes, frame[0], frame[1])
    size = cand_boxes[:, 2:] - cand_boxes[:, :2]
    keep = (cand_scores > cfg["score_threshold"]) & (size[:, 0] > 0) & (size[:, 1] > 0)  # min_bbox_size 0
    cand_scores, labels, cand_boxes = cand_scores[keep], labels[keep], cand_boxes[keep]
    cand_priors = cand_priors[keep]
    bound = torch.cat([cand_boxes.reshape(-1), cand_boxes.new_zeros(1)]).abs().max()
    kept = nms_kept(cand_boxes, cand_scores, labels, cfg, bound)
    chosen = cand_priors[kept]
    kernels = kernels_at(chosen)
    logits = dynamic_mask_logits(
        prototypes, kernels, chosen[:, :2], chosen[:, 2], head.dyn_sizes, head.strides[0], shared_prototypes=True
    )
    return cand_boxes[kept], cand_scores[kept], labels[kept] + 1, logits
