"""Dynamic soft-label assignment (RTMDet section 3.3): which points learn which object, and how sure they are.

Cost of matching point i to object j = soft classification cost (BCE against the soft label IoU_ij, scaled by
|IoU_ij - p_i|^2) + IoU cost (-log IoU_ij x 3) + a soft centre prior 10^(d_ij / stride_i - 3) where d_ij is the
distance to the object's centre (its mask's centre of mass, `instaseg.models.common.masks.mask_centers`). Only
points inside some object's box take part. Each object takes its k cheapest points, k = max(1, floor(sum of its
13 best IoUs)) (SimOTA's dynamic k); a point claimed by several objects keeps the cheapest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

EPS = 1e-7


@dataclass
class Assignment:
    """Per point: ``gt_index`` (-1: background) and ``iou`` with its object (the soft label / box-loss weight)."""

    gt_index: torch.Tensor
    iou: torch.Tensor


class DynamicSoftLabelAssigner:
    def __init__(self, topk: int = 13, soft_center_radius: float = 3.0, iou_weight: float = 3.0):
        self.topk, self.soft_center_radius, self.iou_weight = topk, soft_center_radius, iou_weight

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: torch.Tensor,  # [A, K]
        pred_boxes: torch.Tensor,  # [A, 4] xyxy pixels
        priors: torch.Tensor,  # [A, 3] (x, y, stride)
        gt_boxes: torch.Tensor,  # [G, 4]
        gt_labels: torch.Tensor,  # [G] 0..K-1
        gt_centers: torch.Tensor,  # [G, 2]
    ) -> Assignment:
        num_points, num_gt = priors.shape[0], gt_boxes.shape[0]
        gt_index = torch.full((num_points,), -1, dtype=torch.long, device=priors.device)
        ious = torch.zeros(num_points, device=priors.device)
        if num_gt == 0 or num_points == 0:
            return Assignment(gt_index, ious)
        pts = priors[:, :2]
        deltas = torch.cat([pts[:, None] - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - pts[:, None]], dim=-1)
        valid = (deltas.min(dim=-1).values > 0).any(dim=1)
        if not valid.any():
            return Assignment(gt_index, ious)
        v_priors, v_logits = priors[valid], cls_logits[valid].float()
        pairwise_iou = box_iou(pred_boxes[valid].float(), gt_boxes.float())  # [V, G]
        distance = (v_priors[:, None, :2] - gt_centers[None]).pow(2).sum(-1).sqrt() / v_priors[:, 2:3]
        center_cost = torch.pow(10.0, distance - self.soft_center_radius)
        iou_cost = -torch.log(pairwise_iou + EPS) * self.iou_weight
        cost = self._soft_cls_cost(v_logits, pairwise_iou, gt_labels) + iou_cost + center_cost
        matched_gt, matched = self._dynamic_k(cost, pairwise_iou)
        v_index = torch.full((int(valid.sum()),), -1, dtype=torch.long, device=priors.device)
        v_iou = torch.zeros(int(valid.sum()), device=priors.device)
        v_index[matched] = matched_gt
        v_iou[matched] = pairwise_iou[matched, matched_gt]
        gt_index[valid], ious[valid] = v_index, v_iou
        return Assignment(gt_index, ious)

    @staticmethod
    def _soft_cls_cost(logits: torch.Tensor, iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[V, G]: quality-focal BCE of every point's class logits against each object's one-hot x IoU label."""
        onehot = F.one_hot(labels.long(), logits.shape[-1]).float()  # [G, K]
        soft = onehot[None] * iou[..., None]  # [V, G, K]
        pred = logits[:, None].expand_as(soft)
        scale = (soft - pred.sigmoid()).abs().pow(2.0)
        return (F.binary_cross_entropy_with_logits(pred, soft, reduction="none") * scale).sum(-1)

    def _dynamic_k(self, cost: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(object index of each matched point, bool mask of matched points) over the candidate points."""
        num_gt = cost.shape[1]
        matching = torch.zeros_like(cost, dtype=torch.bool)
        k_candidates = min(self.topk, iou.shape[0])
        dynamic_ks = torch.topk(iou, k_candidates, dim=0).values.sum(0).int().clamp(min=1)
        for j in range(num_gt):
            idx = torch.topk(cost[:, j], k=int(dynamic_ks[j]), largest=False).indices
            matching[idx, j] = True
        multiple = matching.sum(1) > 1
        if multiple.any():  # a point wanted by several objects goes to the one it costs least
            cheapest = cost[multiple].argmin(dim=1)
            matching[multiple] = False
            matching[multiple.nonzero().squeeze(1), cheapest] = True
        matched = matching.any(dim=1)
        return matching[matched].float().argmax(dim=1), matched
