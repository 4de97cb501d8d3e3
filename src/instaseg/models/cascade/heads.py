"""The cascade of box stages and the mask head (Cai & Vasconcelos, "Cascade R-CNN", 2018/2019).

Each stage is a 2-fc head on 7x7 RoIAlign features with its own class scores and class-agnostic box deltas (all
published cascade configs regress one box per RoI: a stage refines the RoI, whatever its class). Stage s is
trained on RoIs labelled at its own foreground IoU (0.5 / 0.6 / 0.7): the first stage samples 512 RoIs per image
(25% foreground, ground-truth boxes added as proposals); each later stage takes the previous stage's refined boxes
as its RoIs, detached, so no gradient flows from a stage's loss into the boxes another stage produced, and
relabels them at its higher threshold (PaddleDetection's and Detectron2's scheme; mmdetection re-samples
instead). Box deltas are normalised per stage (`BoxCoder` weights 1/std), the stage losses weighted (1, 0.5, 0.25).

At inference every stage scores the boxes it is given; a box's class probabilities are the mean of the stages',
its coordinates the last stage's refinement. One mask head (4 x 256 conv on 14x14 RoIAlign, upsampled to 28x28),
trained on the first stage's foreground RoIs as PaddleDetection's config places it, predicts the final boxes'
masks. Detection selection is `per_class_detections`, the same code eager and exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import maskrcnn_loss
from torchvision.ops import box_iou

from instaseg.models.common.nms import per_class_detections
from instaseg.models.detector import RawOutput, clip_boxes


class CascadeStage(nn.Module):
    """One box stage: two fc layers on the pooled RoI, then class logits (K+1) and one box's deltas (4)."""

    def __init__(self, in_features: int, width: int, num_classes: int):
        super().__init__()
        self.head = TwoMLPHead(in_features, width)
        self.cls_score = nn.Linear(width, num_classes + 1)
        self.bbox_pred = nn.Linear(width, 4)
        # the published heads' initialisation: small class logits, near-zero deltas (a stage starts as identity)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.head(roi_features)
        return self.cls_score(x), self.bbox_pred(x)


def split_like(x: torch.Tensor, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rows of ``x`` split as ``parts`` are (one piece per image). One image takes no split, so the traced graph
    has no per-image sizes baked in."""
    if len(parts) == 1:
        return [x]
    return list(x.split([len(p) for p in parts]))


def _nonempty(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


class CascadeRoIHeads(nn.Module):
    """Box stages + mask head on FPN features; `losses` in training, `detect` at inference."""

    def __init__(
        self,
        box_roi_pool: nn.Module,
        stages: nn.ModuleList,
        iou_thresholds: list[float],
        box_weights: list[tuple[float, float, float, float]],
        loss_weights: list[float],
        mask_roi_pool: nn.Module,
        mask_head: nn.Module,
        mask_predictor: nn.Module,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_loss_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ):
        super().__init__()
        if not len(stages) == len(iou_thresholds) == len(box_weights) == len(loss_weights):
            raise ValueError("one IoU threshold, box weight and loss weight per stage")
        self.box_roi_pool = box_roi_pool  # no parameters: one pooler serves every stage
        self.stages = stages
        # low == high threshold: a RoI is foreground or background, none ignored (as the published assigners)
        self.matchers = [Matcher(t, t, allow_low_quality_matches=False) for t in iou_thresholds]
        self.box_coders = [BoxCoder(w) for w in box_weights]
        self.loss_weights = list(loss_weights)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_loss_beta = box_loss_beta
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    # ---- shared ----
    def _decode(self, stage: int, deltas: torch.Tensor, rois: list[torch.Tensor], image_sizes) -> list[torch.Tensor]:
        """Stage ``stage``'s deltas applied to its RoIs, clipped to each image."""
        boxes = self.box_coders[stage].decode_single(deltas, torch.cat(rois))
        return [clip_boxes(b, h, w) for b, (h, w) in zip(split_like(boxes, rois), image_sizes, strict=True)]

    def _mask_logits(self, features, boxes: list[torch.Tensor], image_sizes) -> torch.Tensor:
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_sizes)))

    # ---- inference ----
    def cascade(self, features, proposals: list[torch.Tensor], image_sizes) -> tuple[list, list]:
        """Per image: the last stage's boxes [N,4] and the stages' mean class probabilities [N,K+1]."""
        rois, probs, deltas = proposals, [], None
        for s, stage in enumerate(self.stages):
            if s > 0:
                rois = self._decode(s - 1, deltas, rois, image_sizes)
            logits, deltas = stage(self.box_roi_pool(features, rois, image_sizes))
            probs.append(F.softmax(logits, -1))
        boxes = self._decode(len(self.stages) - 1, deltas, rois, image_sizes)
        return boxes, split_like(torch.stack(probs).mean(0), rois)

    def detect(self, features, proposals: list[torch.Tensor], image_sizes) -> list[RawOutput]:
        """Detections per image in the input frame, with each box's 28x28 mask probabilities."""
        boxes, probs = self.cascade(features, proposals, image_sizes)
        kept = [
            per_class_detections(b, p, self.score_thresh, self.nms_thresh, self.detections_per_img)
            for b, p in zip(boxes, probs, strict=True)
        ]
        final = [k[0] for k in kept]
        labels = torch.cat([k[2] for k in kept])
        logits = self._mask_logits(features, final, image_sizes)
        masks = logits[torch.arange(labels.shape[0], device=labels.device), labels].sigmoid()
        return [RawOutput(*k, m) for k, m in zip(kept, split_like(masks, final), strict=True)]

    # ---- training ----
    def _label(self, rois: list[torch.Tensor], gt_boxes: list, gt_labels: list, matcher: Matcher) -> tuple[list, list]:
        """Per image: index of each RoI's ground truth (0 for background) and its label (0: background)."""
        matched, labels = [], []
        for r, boxes, classes in zip(rois, gt_boxes, gt_labels, strict=True):
            if len(boxes) == 0:
                zeros = torch.zeros(len(r), dtype=torch.int64, device=r.device)
                matched.append(zeros)
                labels.append(zeros)
                continue
            idx = matcher(box_iou(boxes, r))
            matched.append(idx.clamp(min=0))
            labels.append(torch.where(idx >= 0, classes[idx.clamp(min=0)], torch.zeros_like(idx)))
        return matched, labels

    def _sample(self, proposals: list, gt_boxes: list, gt_labels: list) -> list[torch.Tensor]:
        """The first stage's RoIs: proposals and ground truth, sampled to a fixed count and foreground share."""
        rois = [torch.cat([p, g]) for p, g in zip(proposals, gt_boxes, strict=True)]
        _, labels = self._label(rois, gt_boxes, gt_labels, self.matchers[0])
        pos, neg = self.sampler(labels)
        return [r[torch.where(p | n)[0]] for r, p, n in zip(rois, pos, neg, strict=True)]

    def _stage_loss(self, s: int, logits, deltas, rois, matched, labels, gt_boxes) -> tuple[torch.Tensor, ...]:
        """Cross-entropy over the stage's RoIs; smooth-L1 on its foreground RoIs' normalised deltas, averaged
        over all its RoIs (torchvision's and mmdetection's normalisation)."""
        labels = torch.cat(labels)
        if labels.numel() == 0:
            return logits.sum() * 0, deltas.sum() * 0
        targets_per_image = [
            boxes[m] if len(boxes) else torch.zeros_like(r) for boxes, m, r in zip(gt_boxes, matched, rois, strict=True)
        ]
        targets = self.box_coders[s].encode_single(torch.cat(targets_per_image), torch.cat(rois))
        pos = torch.where(labels > 0)[0]
        box_loss = F.smooth_l1_loss(deltas[pos], targets[pos], beta=self.box_loss_beta, reduction="sum")
        return F.cross_entropy(logits, labels), box_loss / labels.numel()

    def losses(self, features, proposals: list, image_sizes, targets: list[dict]) -> dict[str, torch.Tensor]:
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        gt_labels = [t["labels"].to(torch.int64) for t in targets]
        rois, deltas, losses = self._sample(proposals, gt_boxes, gt_labels), None, {}
        for s, stage in enumerate(self.stages):
            if s > 0:  # the previous stage's boxes, without gradient, minus those clipped to nothing
                rois = [_nonempty(b) for b in self._decode(s - 1, deltas.detach(), rois, image_sizes)]
            matched, labels = self._label(rois, gt_boxes, gt_labels, self.matchers[s])
            if s == 0:
                first = (rois, matched, labels)
            logits, deltas = stage(self.box_roi_pool(features, rois, image_sizes))
            cls_loss, box_loss = self._stage_loss(s, logits, deltas, rois, matched, labels, gt_boxes)
            losses[f"loss_classifier_s{s + 1}"] = self.loss_weights[s] * cls_loss
            losses[f"loss_box_reg_s{s + 1}"] = self.loss_weights[s] * box_loss
        losses["loss_mask"] = self._mask_loss(features, image_sizes, *first, targets)
        return losses

    def _mask_loss(self, features, image_sizes, rois, matched, labels, targets) -> torch.Tensor:
        """Per-pixel BCE of the ground-truth class's 28x28 mask on the first stage's foreground RoIs."""
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [r[p] for r, p in zip(rois, pos, strict=True)]
        logits = self._mask_logits(features, boxes, image_sizes)
        gt_masks, gt_labels = [t["masks"] for t in targets], [t["labels"] for t in targets]
        return maskrcnn_loss(logits, boxes, gt_masks, gt_labels, [m[p] for m, p in zip(matched, pos, strict=True)])
