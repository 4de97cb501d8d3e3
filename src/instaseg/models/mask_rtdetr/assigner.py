"""Hungarian matching of queries to objects (one query per object, the rest background), by a cost of class
(focal form), L1 and GIoU of the boxes, and BCE and Dice of the masks on randomly sampled points.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` [N,h,w] at ``points`` [N,P,2] ((x, y) in [0, 1] of each map) -> [N,P]."""
    grid = (2 * points - 1)[:, None]  # [N,1,P,2]
    return F.grid_sample(maps[:, None].float(), grid, mode="bilinear", align_corners=False)[:, 0, 0]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "cxcywh", "xyxy")


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """[Q, n]: how much a query's focal loss falls if it takes each object's class."""
    prob = logits.sigmoid()[:, labels]
    neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    return pos - neg


def mask_costs(pred_masks: torch.Tensor, gt_masks: torch.Tensor, points: torch.Tensor):
    """(BCE cost, Dice cost), each [Q, n], of mask logits [Q,h,w] against ground truth [n,H,W], on the same
    ``points`` [P,2] of both (the frames cover the same padded image)."""
    pred = point_sample(pred_masks, points[None].expand(len(pred_masks), -1, -1))  # [Q,P]
    gt = point_sample(gt_masks, points[None].expand(len(gt_masks), -1, -1))  # [n,P]
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    bce = (pos @ gt.T + neg @ (1 - gt).T) / pred.shape[1]
    prob = pred.sigmoid()
    dice = 1 - (2 * prob @ gt.T + 1) / (prob.sum(-1, keepdim=True) + gt.sum(-1)[None] + 1)
    return bce, dice


class HungarianMatcher:
    """``weights``: class, bbox (L1), giou, mask (BCE), dice; ``num_points`` sampled per image for the mask
    costs (0: no mask cost)."""

    def __init__(self, weights: dict[str, float], num_points: int):
        self.weights, self.num_points = dict(weights), int(num_points)

    def cost(self, logits, boxes, masks, gt_labels, gt_boxes, gt_masks) -> torch.Tensor:
        """[Q, n] total cost of one image: predictions (logits [Q,K], boxes [Q,4] cx,cy,w,h, masks [Q,h,w])
        against its objects (labels [n] 0..K-1, boxes [n,4] cx,cy,w,h, masks [n,H,W] float)."""
        w = self.weights
        total = w["class"] * focal_class_cost(logits, gt_labels)
        total = total + w["bbox"] * torch.cdist(boxes, gt_boxes, p=1)
        total = total - w["giou"] * generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes))
        if self.num_points > 0 and masks is not None:
            points = torch.rand(self.num_points, 2, device=boxes.device)
            bce, dice = mask_costs(masks, gt_masks, points)
            total = total + w["mask"] * bce + w["dice"] * dice
        return total

    @torch.no_grad()
    def __call__(self, logits, boxes, masks, gt_labels, gt_boxes, gt_masks) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image (query indices, object indices) of the cheapest one-to-one assignment. Batched inputs:
        logits [B,Q,K], boxes [B,Q,4], masks [B,Q,h,w] or None; per-image lists of the objects."""
        out = []
        for b in range(logits.shape[0]):
            n = len(gt_labels[b])
            if n == 0:
                empty = torch.zeros(0, dtype=torch.long, device=logits.device)
                out.append((empty, empty))
                continue
            cost = self.cost(logits[b].float(), boxes[b].float(), None if masks is None else masks[b],
                             gt_labels[b], gt_boxes[b], gt_masks[b])  # fmt: skip
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8).cpu().numpy()
            rows, cols = linear_sum_assignment(cost)
            out.append((torch.as_tensor(rows, dtype=torch.long, device=logits.device),
                        torch.as_tensor(np.asarray(cols), dtype=torch.long, device=logits.device)))  # fmt: skip
        return out
