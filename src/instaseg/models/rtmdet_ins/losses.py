"""RTMDet-Ins's own loss, quality focal loss (classification against IoU soft labels); its GIoU (boxes) and Dice
(masks) are the shared ones, `instaseg.models.common.losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
