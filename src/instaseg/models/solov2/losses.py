"""SOLOv2's losses: sigmoid focal loss over every grid cell's classes; Dice over the positive cells' masks is the
shared one (`instaseg.models.common.losses.dice_loss`, with SOLO's eps `DICE_EPS`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Summed sigmoid focal loss (Lin et al.) of [A,K] logits against cell labels [A] in 0..K-1 (-1: background)."""
    num_classes = logits.shape[-1]
    onehot = F.one_hot(labels + 1, num_classes + 1)[:, 1:].to(logits.dtype)  # background: all zeros
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum")

DICE_EPS = 1e-3  # on each sum of the Dice denominator, as published: keeps an empty mask's loss finite
