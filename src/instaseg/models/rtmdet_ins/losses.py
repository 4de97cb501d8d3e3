"""RTMDet-Ins losses: quality focal loss (classification against IoU soft labels), GIoU (boxes), Dice (masks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss


def quality_focal_loss(
    logits: torch.Tensor, gt_index: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, beta: float = 2.0
) -> torch.Tensor:
    """Summed QFL (Li et al., Generalized Focal Loss) over [A,K] logits.

    Background points push every class to 0 with weight p^beta; a positive point (``gt_index >= 0``) pushes its
    class ``labels`` to its soft ``scores`` (the IoU of its box) with weight |score - p|^beta.
    """
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * prob.pow(beta)
    pos = (gt_index >= 0).nonzero().squeeze(1)
    if pos.numel():
        cls = labels[pos]
        target = scores[pos].to(logits.dtype)
        pos_logits = logits[pos, cls]
        pos_loss = F.binary_cross_entropy_with_logits(pos_logits, target, reduction="none")
        pos_loss = pos_loss * (target - prob[pos, cls]).abs().pow(beta)
        loss = loss.index_put((pos, cls), pos_loss)
    return loss.sum()


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Summed (1 - GIoU) of matched xyxy boxes, each weighted (by its soft label)."""
    return (generalized_box_iou_loss(pred, target, reduction="none", eps=1e-6) * weight).sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 5e-6) -> torch.Tensor:
    """Summed 1 - 2|p.t| / (|p|^2 + |t|^2) over instances (the squared-denominator Dice of V-Net)."""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    inter = (p * t).sum(1)
    return (1 - 2 * inter / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)).sum()
