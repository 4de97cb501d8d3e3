"""Which anchor points learn which object, and the soft class target each one gets.

- Task-aligned assignment (TOOD, Feng et al. 2021), PP-YOLOE's: alignment t = s^alpha x u^beta with s the
  point's predicted score for the object's class and u the IoU of its predicted box with the object. Each object
  takes the ``topk`` points of highest t among those whose centre lies inside its box; a point taken by several
  objects keeps the one its box overlaps most. The soft target of a positive is t normalised per object so that
  the object's best point gets the best IoU any of its points reached.
- ATSS (Zhang et al. 2020), the static warm-up assigner: per level, the ``topk`` points nearest the object's
  centre are candidates; those whose anchor box (``anchor_scale`` strides square) overlaps the object by more
  than the candidates' mean + standard deviation of IoU, and whose centre lies inside the object, are positive.
  Their soft target is the IoU of their predicted box with the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

EPS = 1e-9


@dataclass
class Assignment:
    """Per point: ``gt_index`` (-1: background) and ``score``, the soft target of its object's class (0 if none)."""

    gt_index: torch.Tensor
    score: torch.Tensor


def _background(num_points: int, device: torch.device) -> Assignment:
    gt_index = torch.full((num_points,), -1, dtype=torch.long, device=device)
    return Assignment(gt_index, torch.zeros(num_points, device=device))


def points_inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[G, A] whether each point [A,2] lies strictly inside each box [G,4]."""
    x, y = points[None, :, 0], points[None, :, 1]
    return (x > boxes[:, 0:1]) & (x < boxes[:, 2:3]) & (y > boxes[:, 1:2]) & (y < boxes[:, 3:4])


def resolve_overlaps(positive: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """[G, A] positives with each point claimed by several objects kept for the one of highest IoU only."""
    shared = positive.sum(0) > 1
    if not shared.any():
        return positive
    best = torch.zeros_like(positive)
    best[ious.argmax(0), torch.arange(ious.shape[1], device=ious.device)] = True
    return torch.where(shared[None], best, positive)


class TaskAlignedAssigner:
    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0):
        self.topk, self.alpha, self.beta = topk, alpha, beta

    @torch.no_grad()
    def __call__(
        self,
        scores: torch.Tensor,  # [A, K] probabilities
        pred_boxes: torch.Tensor,  # [A, 4] xyxy
        points: torch.Tensor,  # [A, 2] cell centres
        gt_boxes: torch.Tensor,  # [G, 4]
        gt_labels: torch.Tensor,  # [G] 0..K-1
    ) -> Assignment:
        num_points, num_gt = points.shape[0], gt_boxes.shape[0]
        if num_gt == 0 or num_points == 0:
            return _background(num_points, points.device)
        ious = box_iou(gt_boxes.float(), pred_boxes.float())  # [G, A]
        class_scores = scores.float().t()[gt_labels.long()]  # [G, A]
        alignment = class_scores.pow(self.alpha) * ious.pow(self.beta)
        inside = points_inside(points, gt_boxes)
        top = torch.topk(alignment * inside, min(self.topk, num_points), dim=1).indices
        in_topk = torch.zeros_like(inside).scatter_(1, top, True)
        positive = resolve_overlaps(in_topk & inside, ious)
        gt_index = torch.where(positive.any(0), positive.float().argmax(0), -1)
        # normalise per object: its best point's target is the best IoU among its positives
        alignment = alignment * positive
        best_alignment = alignment.amax(1, keepdim=True)
        best_iou = (ious * positive).amax(1, keepdim=True)
        score = (alignment / (best_alignment + EPS) * best_iou).amax(0)
        return Assignment(gt_index, score)


class ATSSAssigner:
    def __init__(self, topk: int = 9, anchor_scale: float = 5.0):
        self.topk, self.anchor_scale = topk, anchor_scale

    @torch.no_grad()
    def __call__(
        self,
        pred_boxes: torch.Tensor,  # [A, 4]
        points: torch.Tensor,  # [A, 2] cell centres
        strides: torch.Tensor,  # [A]
        level_sizes: list[int],  # points per level, in the order of ``points``
        gt_boxes: torch.Tensor,  # [G, 4]
    ) -> Assignment:
        num_points, num_gt = points.shape[0], gt_boxes.shape[0]
        if num_gt == 0 or num_points == 0:
            return _background(num_points, points.device)
        half = (strides * self.anchor_scale / 2)[:, None]
        anchors = torch.cat([points - half, points + half], dim=1)
        ious = box_iou(gt_boxes.float(), anchors)  # [G, A]
        centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        distance = torch.cdist(centres.float(), points.float())  # [G, A]
        candidate = torch.zeros_like(ious, dtype=torch.bool)
        start = 0
        for size in level_sizes:  # the nearest points of each level
            nearest = torch.topk(distance[:, start : start + size], min(self.topk, size), dim=1, largest=False)
            candidate[:, start : start + size].scatter_(1, nearest.indices, True)
            start += size
        candidate_ious = torch.where(candidate, ious, torch.nan)
        mean = candidate_ious.nanmean(1, keepdim=True)
        dof = (candidate.sum(1, keepdim=True) - 1).clamp(min=1)  # the unbiased standard deviation
        std = ((candidate_ious - mean).pow(2).nansum(1, keepdim=True) / dof).sqrt()
        positive = candidate & (ious > mean + std) & points_inside(points, gt_boxes)
        positive = resolve_overlaps(positive, ious)
        gt_index = torch.where(positive.any(0), positive.float().argmax(0), -1)
        pred_ious = box_iou(gt_boxes.float(), pred_boxes.float())
        score = (pred_ious * positive).amax(0)
        return Assignment(gt_index, score)
