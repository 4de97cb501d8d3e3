"""The RPN's deterministic sampling in PaddleDetection's anchor order (numpy and torch only; no Paddle needed)."""

from __future__ import annotations

import numpy as np
import torch


def anchor_perm(n_sizes: int, n_ratios: int) -> np.ndarray:
    """For each of our anchors of a location (ratio-major: r * n_sizes + s) the Paddle anchor (size-major:
    s * n_ratios + r)."""
    return np.array([s * n_ratios + r for r in range(n_ratios) for s in range(n_sizes)])


class ReferenceOrderSampler:
    """The RPN's sampler as PaddleDetection's with ``use_random: False``: the first positives / negatives in the
    REFERENCE's anchor order (within a location size-major; ours is ratio-major, locations in the same order).
    With several sizes per location (C4's 15 anchors), "the first in our order" takes other anchors of the location
    where a count runs out part-way through it (2 of the 128 negatives of the C4 dump's second picture)."""

    def __init__(self, sampler, n_sizes: int, n_per_location: int):
        self.batch, self.fraction = sampler.batch_size_per_image, sampler.positive_fraction
        self.n = n_per_location
        self.slot = torch.from_numpy(anchor_perm(n_sizes, n_per_location // n_sizes))  # our slot -> theirs

    def __call__(self, labels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos_masks, neg_masks = [], []
        for lab in labels:
            idx = torch.arange(len(lab))
            rank = idx // self.n * self.n + self.slot[idx % self.n]  # our anchor i is the reference's anchor rank[i]
            pos, neg = torch.where(lab >= 1)[0], torch.where(lab == 0)[0]
            n_pos = min(int(self.batch * self.fraction), pos.numel())
            n_neg = min(self.batch - n_pos, neg.numel())
            pos, neg = pos[rank[pos].argsort()[:n_pos]], neg[rank[neg].argsort()[:n_neg]]
            pos_masks.append(torch.zeros_like(lab, dtype=torch.uint8).index_fill_(0, pos, 1))
            neg_masks.append(torch.zeros_like(lab, dtype=torch.uint8).index_fill_(0, neg, 1))
        return pos_masks, neg_masks
