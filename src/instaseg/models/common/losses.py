"""Losses that several architectures train with: GIoU for boxes, Dice for masks, varifocal for IoU-aware scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Summed (1 - GIoU) of matched xyxy boxes, each weighted (by its soft label)."""
    return (generalized_box_iou_loss(pred, target, reduction="none", eps=1e-6) * weight).sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Per instance [N]: 1 - 2|p.t| / (|p|^2 + eps + |t|^2 + eps) of [N,...] mask logits against targets in [0, 1]
    (the squared-denominator Dice of V-Net); each architecture states its published ``eps``, which keeps an empty
    mask's loss finite."""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    inter = (p * t).sum(1)
    return 1 - 2 * inter / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)


def varifocal_loss(
    logits: torch.Tensor,
    score: torch.Tensor,
    positive: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    detach_weight: bool = False,
) -> torch.Tensor:
    """Summed varifocal loss (Zhang et al., VarifocalNet) of logits against IoU-aware targets ``score``.

    Where ``positive`` (1), BCE towards the target weighted by the target itself (confident, well-localised
    predictions count most); elsewhere BCE towards ``score`` weighted by alpha x p^gamma (easy negatives fade).
    ``detach_weight`` keeps the weight out of the gradient, as DETR-style set losses compute it."""
    prob = logits.sigmoid()
    if detach_weight:
        prob = prob.detach()
    positive = positive.to(logits.dtype)
    weight = alpha * prob.pow(gamma) * (1 - positive) + score * positive
    return (F.binary_cross_entropy_with_logits(logits, score, reduction="none") * weight).sum()
