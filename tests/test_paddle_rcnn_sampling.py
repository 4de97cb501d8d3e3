"""The full-size PaddleDetection comparison's RPN sampling (tools/paddle_rcnn_full/sampling.py): with sampling made
deterministic on both sides, ours must take the anchors PaddleDetection's ``use_random: False`` takes, the first
in ITS anchor order, although our anchors of a location are laid out in another order. No Paddle needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from instaseg.models.common.rcnn_ops import CellAnchorGenerator

SIZES, RATIOS = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)  # the C4 RPN's 15 anchors per location


def _sampling():
    path = Path(__file__).resolve().parents[1] / "tools" / "paddle_rcnn_full" / "sampling.py"
    spec = importlib.util.spec_from_file_location("paddle_rcnn_sampling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paddle_cell_anchors() -> np.ndarray:
    """PaddleDetection's AnchorGenerator.generate_cell_anchors: size-major, w = sqrt(size^2 / ratio), h = ratio w."""
    out = []
    for size in SIZES:
        for ratio in RATIOS:
            w = np.sqrt(size**2.0 / ratio)
            out.append([-w / 2, -ratio * w / 2, w / 2, ratio * w / 2])
    return np.array(out)


def test_anchor_perm_maps_our_cell_anchors_onto_paddle_ones():
    ours = CellAnchorGenerator((SIZES,), (RATIOS,), exact=True).cell_anchors[0].numpy()
    perm = _sampling().anchor_perm(len(SIZES), len(RATIOS))
    np.testing.assert_allclose(ours, paddle_cell_anchors()[perm], atol=1e-3)


def test_sampler_takes_the_first_anchors_in_paddle_order():
    sampling = _sampling()
    n = len(SIZES) * len(RATIOS)
    labels = torch.zeros(3 * n)  # three locations, every anchor negative
    labels[[n + 1, n + 7]] = 1.0  # two positives in the second location
    labels[[2, 4]] = -1.0  # two ignored anchors in the first
    batch = BalancedPositiveNegativeSampler(6, 0.5)
    pos, neg = sampling.ReferenceOrderSampler(batch, len(SIZES), n)([labels])
    perm = sampling.anchor_perm(len(SIZES), len(RATIOS))
    # PaddleDetection's subsample_labels with use_random False, on the labels in its own anchor order
    rank = np.concatenate([loc * n + perm for loc in range(3)])  # our anchor i is its anchor rank[i]
    theirs = np.full(3 * n, -1.0)
    theirs[rank] = labels.numpy()
    want_neg = np.flatnonzero(theirs == 0)[:4]
    want_pos = np.flatnonzero(theirs == 1)[:2]
    assert sorted(rank[torch.where(neg[0])[0].numpy()]) == list(want_neg)
    assert sorted(rank[torch.where(pos[0])[0].numpy()]) == list(want_pos)
    # "the first in our order" takes other negatives of the first location: the difference this sampler removes
    assert sorted(rank[np.flatnonzero(labels.numpy() == 0)[:4]]) != list(want_neg)
