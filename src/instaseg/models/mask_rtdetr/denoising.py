"""Denoising queries (Li et al., DN-DETR; Zhang et al., DINO): during training, noised copies of the ground truth
(labels flipped at random, boxes jittered) are fed to the decoder beside the matching queries, and each must
reconstruct its own object. Their assignment is known, so they teach box refinement without the instability of
Hungarian matching; an attention mask keeps the groups and the matching queries from seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@dataclass
class DenoisingGroup:
    """The denoising queries of a batch: content [B,N,D], reference boxes before the sigmoid [B,N,4], the
    attention mask over [N + queries]^2 (True: blocked) and, per image, which queries (``positive``) reconstruct
    which ground truth (``gt_index``)."""

    content: torch.Tensor
    boxes_unact: torch.Tensor
    blocked: torch.Tensor
    positive: list[torch.Tensor]
    gt_index: list[torch.Tensor]
    groups: int

    @property
    def size(self) -> int:
        return self.content.shape[1]


def attention_mask(per_group: int, groups: int, num_queries: int, device: torch.device) -> torch.Tensor:
    """True where a query may not look: matching queries never see denoising ones, groups never see each other."""
    n = per_group * groups
    blocked = torch.zeros(n + num_queries, n + num_queries, dtype=torch.bool, device=device)
    blocked[n:, :n] = True
    for g in range(groups):
        rows = slice(per_group * g, per_group * (g + 1))
        blocked[rows, :n] = True
        blocked[rows, rows] = False
    return blocked


def build_denoising(
    labels: list[torch.Tensor],  # per image [n] in 0..K-1
    boxes: list[torch.Tensor],  # per image [n,4] cx, cy, w, h normalised
    class_embed: torch.Tensor,  # [K, D]
    num_queries: int,
    num_denoising: int,
    label_noise: float,
    box_noise: float,
) -> DenoisingGroup | None:
    """``num_denoising // max objects`` groups of noised ground truth, or None without objects in the batch."""
    counts = [len(t) for t in labels]
    most = max(counts, default=0)
    if num_denoising <= 0 or most == 0:
        return None
    groups = max(1, num_denoising // most)
    bsz, num_classes, device = len(labels), class_embed.shape[0], class_embed.device
    query_class = torch.full((bsz, most), num_classes, dtype=torch.long, device=device)  # K: padding row
    query_box = torch.zeros(bsz, most, 4, device=device)
    real = torch.zeros(bsz, most, dtype=torch.bool, device=device)
    for i, n in enumerate(counts):
        query_class[i, :n], query_box[i, :n], real[i, :n] = labels[i], boxes[i], True
    query_class, query_box, real = query_class.repeat(1, groups), query_box.repeat(1, groups, 1), real.repeat(1, groups)
    if label_noise > 0:
        flip = (torch.rand(query_class.shape, device=device) < label_noise * 0.5) & real
        query_class = torch.where(flip, torch.randint_like(query_class, 0, num_classes), query_class)
    if box_noise > 0:
        half = torch.cat([query_box[..., 2:] * 0.5, query_box[..., 2:]], dim=-1) * box_noise
        query_box = query_box + half * (torch.rand_like(query_box) * 2 - 1)
    table = torch.cat([class_embed, class_embed.new_zeros(1, class_embed.shape[1])])
    positive = [real[i].nonzero().squeeze(1) for i in range(bsz)]
    gt_index = [torch.arange(n, device=device).repeat(groups) for n in counts]
    return DenoisingGroup(
        content=table[query_class],
        boxes_unact=inverse_sigmoid(query_box),
        blocked=attention_mask(most, groups, num_queries, device),
        positive=positive,
        gt_index=gt_index,
        groups=groups,
    )
