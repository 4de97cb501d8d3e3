"""Dense one-stage detectors' points: one per feature-map cell of every pyramid level, flattened level after level.

Priors are (x, y, stride) at cell corners (MMDetection's point generator with offset 0); box branches predict
distances from the point to the box's sides.
"""

from __future__ import annotations

import torch


def make_priors(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """[A,3] (x, y, stride) of every feature-map point, level by level, row-major (points at cell corners)."""
    out = []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s
        xs = torch.arange(w, device=device, dtype=torch.float32) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full_like(gx.reshape(-1), float(s))], dim=1))
    return torch.cat(out, dim=0)


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """[B,C,h,w] per level -> [B, sum(h*w), C]: cells row-major, level after level."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def distance_to_boxes(priors: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """xyxy boxes from points and (left, top, right, bottom) distances."""
    pts = priors[..., :2]
    return torch.cat([pts - distances[..., :2], pts + distances[..., 2:]], dim=-1)
