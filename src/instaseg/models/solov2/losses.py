"""SOLOv2's losses: sigmoid focal loss over every grid cell's classes, Dice over the positive cells' masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Summed sigmoid focal loss (Lin et al.) of [A,K] logits against cell labels [A] in 0..K-1 (-1: background)."""
    num_classes = logits.shape[-1]
    onehot = F.one_hot(labels + 1, num_classes + 1)[:, 1:].to(logits.dtype)  # background: all zeros
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum")


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-mask 1 - 2|p.t| / (|p|^2 + |t|^2) of [N,...] logits and targets in [0, 1] (the squared-denominator
    Dice SOLO uses; ``eps`` on each sum as published keeps an empty mask's loss finite)."""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).to(p.dtype)
    inter = (p * t).sum(1)
    return 1 - 2 * inter / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)
