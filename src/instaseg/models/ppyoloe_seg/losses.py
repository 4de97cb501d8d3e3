"""PP-YOLOE-seg's own losses: distribution focal (box sides) and prototype-mask BCE. Its varifocal (classification)
and GIoU (boxes) terms are the shared ones, `instaseg.models.common.losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distribution_focal_loss(logits: torch.Tensor, distances: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Per box [N]: mean over its 4 sides of DFL (Li et al., Generalized Focal Loss): cross-entropy towards the two
    bins around each true distance [N,4] (in strides), weighted by nearness, so the distribution's mean lands there.

    ``logits`` [N, 4(reg_max+1)]; distances are clipped to just under ``reg_max`` (the last bin is the farthest
    a point can reach)."""
    target = distances.clamp(0, reg_max - 0.01)
    left = target.floor().long()
    weight_right = target - left
    logits = logits.reshape(-1, reg_max + 1)
    left, weight_right = left.reshape(-1), weight_right.reshape(-1)
    loss = F.cross_entropy(logits, left, reduction="none") * (1 - weight_right)
    loss = loss + F.cross_entropy(logits, left + 1, reduction="none") * weight_right
    return loss.reshape(-1, 4).mean(1)


def cropped_mask_bce(
    logits: torch.Tensor, targets: torch.Tensor, crop: torch.Tensor, area: torch.Tensor | None = None
) -> torch.Tensor:
    """Per instance [N]: BCE of mask logits [N,h,w] against targets summed over the pixels of ``crop`` [N,h,w]
    (its box) and divided by ``area`` [N], the box's area in pixels of this map (default: the crop's pixel
    count): a mask is judged inside its box only, and a small object's few pixels weigh as much as a large
    one's."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    norm = crop.sum((1, 2)).clamp(min=1) if area is None else area.clamp(min=1e-6)
    return (bce * crop).sum((1, 2)) / norm
