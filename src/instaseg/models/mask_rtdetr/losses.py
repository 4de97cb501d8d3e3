"""Mask-RT-DETR's training losses (MaskDINO's set criterion with RT-DETR's IoU-aware classification):

- class: varifocal loss whose target for a matched query is its IoU with its object (mask IoU for the final
  layer's queries, box IoU for the auxiliary sets, as published), zero elsewhere;
- boxes: L1 and GIoU of matched (cx, cy, w, h) boxes;
- masks: BCE and Dice on points, 3/4 of them where the prediction is least certain (importance sampling,
  Kirillov et al., PointRend), 1/4 uniform.

Every set is weighted as published (class 4, bbox 5, giou 2, mask 5, dice 5) and normalised by the number of
objects. Sets: the last decoder layer (matched); auxiliary: the encoder's selected queries, the initial queries
and the earlier layers (each matched on its own); denoising: every layer's denoising queries (known assignment).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss

from instaseg.models.common.losses import varifocal_loss
from instaseg.models.mask_rtdetr.assigner import HungarianMatcher, cxcywh_to_xyxy, point_sample
from instaseg.models.mask_rtdetr.denoising import DenoisingGroup
from instaseg.models.mask_rtdetr.heads import Predictions

TERMS = ("class", "bbox", "giou", "mask", "dice")
Indices = list[tuple[torch.Tensor, torch.Tensor]]


def mask_iou_of_pairs(pred_logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binarised mask logits [N,h,w] (upsampled 2x) and ground truth [N,H,W] resampled to that size."""
    pred = F.interpolate(pred_logits[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0] > 0
    gt = F.interpolate(gt[None], size=pred.shape[-2:], mode="bilinear", align_corners=False)[0] > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return (inter + 0.01) / (union + 0.01)


def uncertain_points(logits: torch.Tensor, count: int, oversample: float, important: float) -> torch.Tensor:
    """[N, count, 2] points in [0, 1]: the ``important`` share where |logit| is smallest among
    ``oversample x count`` uniform candidates, the rest uniform."""
    n = logits.shape[0]
    candidates = torch.rand(n, int(count * oversample), 2, device=logits.device)
    uncertainty = -point_sample(logits.detach(), candidates).abs()
    k = int(count * important)
    top = uncertainty.topk(k, dim=1).indices
    chosen = candidates.gather(1, top[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(n, count - k, 2, device=logits.device)], dim=1)


def object_count(targets: list[dict], device: torch.device) -> torch.Tensor:
    """Objects per process (averaged over processes under DDP), at least 1: every loss's normaliser."""
    count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)


class SetCriterion:
    def __init__(self, num_classes: int, weights: dict[str, float], matcher: HungarianMatcher, num_points: int,
                 oversample: float = 3.0, important: float = 0.75):  # fmt: skip
        self.num_classes, self.weights, self.matcher = num_classes, dict(weights), matcher
        self.num_points, self.oversample, self.important = int(num_points), float(oversample), float(important)

    def match(self, pred: Predictions, targets: list[dict]) -> Indices:
        return self.matcher(pred.logits, pred.boxes, pred.masks, [t["labels"] for t in targets],
                            [t["boxes"] for t in targets], [t["masks"] for t in targets])  # fmt: skip

    def set_losses(self, pred: Predictions, targets: list[dict], indices: Indices, norm: torch.Tensor,
                   mask_iou: bool) -> dict[str, torch.Tensor]:  # fmt: skip
        """The five weighted terms of one prediction set under an assignment."""
        batch = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query = torch.cat([q for q, _ in indices])
        labels = torch.cat([t["labels"][g] for t, (_, g) in zip(targets, indices, strict=True)])
        gt_boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, indices, strict=True)])
        boxes = pred.boxes[batch, query]
        w = self.weights
        # zero terms keep every output in the graph when nothing is matched (DDP wants all gradients)
        zero = pred.boxes.sum() * 0 + pred.masks.sum() * 0
        if len(query) == 0:
            score = torch.zeros_like(pred.logits)
            loss = {"class": w["class"] * varifocal_loss(pred.logits, score, score, detach_weight=True) / norm}
            return loss | {k: zero for k in TERMS[1:]}
        gt_masks = torch.cat([t["masks"][g] for t, (_, g) in zip(targets, indices, strict=True)])
        masks = pred.masks[batch, query]
        with torch.no_grad():
            if mask_iou:
                iou = mask_iou_of_pairs(masks.float(), gt_masks)
            else:
                iou = box_iou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(gt_boxes)).diagonal()
        label = torch.zeros_like(pred.logits)
        label[batch, query, labels] = 1.0
        score = torch.zeros_like(pred.logits)
        score[batch, query, labels] = iou.to(score.dtype).clamp(min=0)
        loss = {"class": w["class"] * varifocal_loss(pred.logits, score, label, detach_weight=True) / norm}
        loss["bbox"] = w["bbox"] * (boxes - gt_boxes).abs().sum() / norm + zero
        giou = generalized_box_iou_loss(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes))
        loss["giou"] = w["giou"] * giou.sum() / norm
        points = uncertain_points(masks, self.num_points, self.oversample, self.important)
        pred_points = point_sample(masks, points)
        gt_points = point_sample(gt_masks, points)
        bce = F.binary_cross_entropy_with_logits(pred_points, gt_points, reduction="none").mean(1)
        loss["mask"] = w["mask"] * bce.sum() / norm
        prob = pred_points.sigmoid()
        dice = 1 - (2 * (prob * gt_points).sum(1) + 1) / (prob.sum(1) + gt_points.sum(1) + 1)
        loss["dice"] = w["dice"] * dice.sum() / norm
        return loss

    def __call__(self, layers: list[Predictions], encoder_out: Predictions, initial: Predictions | None,
                 dn: DenoisingGroup | None, targets: list[dict]) -> dict[str, torch.Tensor]:  # fmt: skip
        """``layers``: every decoder layer's predictions (denoising queries first when ``dn``); ``initial``:
        the queries' predictions before the first layer (with denoising only, as published)."""
        norm = object_count(targets, encoder_out.logits.device)
        dn_sets: list[Predictions] = []
        if dn is not None:
            split = [p.split(dn.size) for p in layers]
            dn_sets, layers = [s[0] for s in split], [s[1] for s in split]
            if initial is not None:
                init_dn, initial = initial.split(dn.size)
                dn_sets.insert(0, init_dn)
        aux_sets = [encoder_out] + ([initial] if initial is not None else []) + layers[:-1]
        final = self.set_losses(layers[-1], targets, self.match(layers[-1], targets), norm, mask_iou=True)
        out = {f"loss_{k}": v for k, v in final.items()}
        aux = [self.set_losses(p, targets, self.match(p, targets), norm, mask_iou=False) for p in aux_sets]
        out |= {f"loss_{k}_aux": sum(a[k] for a in aux) for k in TERMS}
        if dn is not None:
            fixed = list(zip(dn.positive, dn.gt_index, strict=True))
            dn_norm = norm * dn.groups
            sets = [self.set_losses(p, targets, fixed, dn_norm, mask_iou=i == len(dn_sets) - 1)
                    for i, p in enumerate(dn_sets)]  # fmt: skip
            out |= {f"loss_{k}_dn": sum(s[k] for s in sets) for k in TERMS}
        else:  # no objects in the batch: the same keys, zero, every step logs the same names
            out |= {f"loss_{k}_dn": encoder_out.logits.sum() * 0 for k in TERMS}
        return out
