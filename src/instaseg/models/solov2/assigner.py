"""SOLOv2's training targets: which grid cells of which level own which object.

An object goes to every level whose scale range holds its scale, sqrt(box width x box height) in network-input
pixels (the ranges overlap, so an object in between trains two levels). On a level with an S x S grid over the
padded input, the cells it owns are those its centre region touches: the box scaled by ``sigma`` (0.2) about
the mask's centre of mass, capped to the 3 x 3 cells around the centre cell. A cell two objects claim is treated
as the published code treats it: the later annotation gives its label, and the cell's kernel trains on both masks
(one (cell, object) pair each).

Everything is tensor arithmetic over all objects of a level at once; there is no loop over objects or cells.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from instaseg.models.common.masks import mask_centers


class Assignment(NamedTuple):
    """One image's targets over all levels' cells (level after level, row-major): ``gt_index`` [A] is the object
    giving the cell its label (the last one claiming it) or -1 (background); ``labels`` [A] its class in 0..K-1, or
    -1; ``pairs`` [P, 2] every (cell, object) claim, the mask targets of the cells' kernels."""

    gt_index: torch.Tensor
    labels: torch.Tensor
    pairs: torch.Tensor


def _cells(coord: torch.Tensor, extent: float, grid: int) -> torch.Tensor:
    """Grid index of positions along one axis (truncation, so positions left of 0 land in cell 0)."""
    return torch.div(coord / extent * grid, 1, rounding_mode="trunc").long()


def center_region(
    centers: torch.Tensor, boxes: torch.Tensor, grid: int, padded: tuple[int, int], sigma: float
) -> tuple[torch.Tensor, ...]:
    """(top, bottom, left, right) cell bounds, inclusive, of each object's centre region on an S x S grid."""
    height, width = padded
    cx, cy = centers[:, 0], centers[:, 1]
    half_w = 0.5 * (boxes[:, 2] - boxes[:, 0]) * sigma
    half_h = 0.5 * (boxes[:, 3] - boxes[:, 1]) * sigma
    row, col = _cells(cy, height, grid), _cells(cx, width, grid)
    top = torch.maximum(_cells(cy - half_h, height, grid).clamp(min=0), row - 1)
    bottom = torch.minimum(_cells(cy + half_h, height, grid).clamp(max=grid - 1), row + 1)
    left = torch.maximum(_cells(cx - half_w, width, grid).clamp(min=0), col - 1)
    right = torch.minimum(_cells(cx + half_w, width, grid).clamp(max=grid - 1), col + 1)
    return top, bottom, left, right


def claims_of_level(
    boxes: torch.Tensor,
    centers: torch.Tensor,
    eligible: torch.Tensor,
    grid: int,
    padded: tuple[int, int],
    sigma: float,
) -> torch.Tensor:
    """[N, S*S] whether each of the ``eligible`` objects claims each cell of one level."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros((0, grid * grid), dtype=torch.bool, device=boxes.device)
    top, bottom, left, right = center_region(centers, boxes, grid, padded, sigma)
    idx = torch.arange(grid, device=boxes.device)
    rows = (idx[None] >= top[:, None]) & (idx[None] <= bottom[:, None])  # [N, S]
    cols = (idx[None] >= left[:, None]) & (idx[None] <= right[:, None])
    return (rows[:, :, None] & cols[:, None, :] & eligible[:, None, None]).flatten(1)


def assign(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    grids: list[int],
    scale_ranges: list[list[float]],
    sigma: float,
) -> Assignment:
    """Targets of one image. ``boxes`` [N,4] xyxy, ``labels`` [N] in 0..K-1, ``masks`` [N,H,W] over the padded
    input (its size is the frame the grids divide)."""
    padded = (int(masks.shape[-2]), int(masks.shape[-1]))
    centers = mask_centers(masks)
    scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    visible = masks.flatten(1).amax(dim=1) > 0 if masks.shape[0] else scale > 0
    claims = []
    for grid, (lo, hi) in zip(grids, scale_ranges, strict=True):
        eligible = visible & (scale >= lo) & (scale <= hi)
        claims.append(claims_of_level(boxes, centers, eligible, grid, padded, sigma))
    claimed = torch.cat(claims, dim=1)  # [N, A]
    order = torch.arange(claimed.shape[0], device=claimed.device)[:, None]
    gt_index = torch.where(claimed, order, torch.full_like(order, -1)).amax(dim=0) if claimed.shape[0] else (
        torch.full((claimed.shape[1],), -1, dtype=torch.long, device=claimed.device))  # fmt: skip
    cell_labels = labels[gt_index.clamp(min=0)] if labels.numel() else torch.zeros_like(gt_index)
    pairs = claimed.t().nonzero()  # (cell, object), cell by cell
    return Assignment(gt_index, torch.where(gt_index >= 0, cell_labels, torch.full_like(gt_index, -1)), pairs)


def mask_targets(masks: torch.Tensor, stride: int, soft: bool) -> torch.Tensor:
    """[N, H/stride, W/stride] mask targets at the mask feature's stride: the share of each cell an object
    covers (``soft``), or, as published, the mask bilinearly downscaled (OpenCV, ``mmcv.imrescale``) and rounded:
    each cell reads its central 2 x 2 pixels (input pixels stride*j + stride/2 - 1 and + stride/2, weights 1/2)
    and is foreground when at least two of the four are."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, masks.shape[-2] // stride, masks.shape[-1] // stride), dtype=torch.float32)
    h, w = masks.shape[-2] // stride, masks.shape[-1] // stride
    m = masks[:, : h * stride, : w * stride].float()
    if soft:
        return F.avg_pool2d(m[:, None], stride)[:, 0]
    a = stride // 2 - 1  # OpenCV samples input coordinate stride*j + (stride - 1)/2, between pixels a and a + 1
    centre = m[:, a::stride, a::stride] + m[:, a + 1 :: stride, a::stride]
    centre = centre + m[:, a::stride, a + 1 :: stride] + m[:, a + 1 :: stride, a + 1 :: stride]
    return (centre >= 2).float()
