"""Inference of RTMDet-Ins: scores -> top candidates -> class-aware NMS -> dynamic masks.

Written once for eager and exported graphs: every step is a tensor op that ONNX expresses (TopK, NonZero via
boolean indexing, NonMaxSuppression, MatMul), so the exported model and the eager one run the same code.
"""

from __future__ import annotations

import torch

from instaseg.models.common.nms import select_detections
from instaseg.models.rtmdet_ins.heads import dynamic_mask_logits


def detect_single(
    scores: torch.Tensor,  # [A, K] probabilities
    boxes: torch.Tensor,  # [A, 4]
    kernels: torch.Tensor,  # [A, P]
    priors: torch.Tensor,  # [A, 3]
    prototypes: torch.Tensor,  # [C, h, w]
    head,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4], scores [N], labels [N] 1..K, mask probabilities [N,h,w] at the prototype stride).

    Every (point, class) pair above the score threshold is a candidate (multi-label); the best ``nms_pre`` go
    through class-aware NMS and the best ``max_dets`` survivors get masks.
    """
    point, out_boxes, out_scores, labels = select_detections(scores, boxes, cfg)
    stride = head.strides[0]
    logits = dynamic_mask_logits(
        prototypes, kernels[point], priors[point, :2], priors[point, 2], head.dyn_sizes, stride
    )
    return out_boxes, out_scores, labels, logits.sigmoid()
