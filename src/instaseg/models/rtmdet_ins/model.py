"""RTMDet-Ins on the detector contract: ``model(images, targets) -> losses`` in training,
``model(images) -> [{boxes, labels, scores, masks [N,1,H,W]}]`` at the input images' resolution in evaluation
(torchvision's convention), and ``raw_forward`` for instaseg's predictor and export: image-frame mask
probabilities at stride 8 (``mask_stride``), not pasted.

Pre-processing is torchvision's GeneralizedRCNNTransform (ImageNet normalisation, which equals the published
BGR mean/std, resize by the recipe rule, zero padding to a multiple of 32), the `InputSpec` every architecture
shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instaseg.models.common.losses import dice_loss, giou_loss
from instaseg.models.common.masks import box_cropped_output, mask_centers
from instaseg.models.common.points import distance_to_boxes, flatten_levels, make_priors
from instaseg.models.detector import (
    QuantizationSettings,
    RawOutput,
    TransformDetector,
    clip_boxes,
    pad_masks,
    resize_transform,
)
from instaseg.models.rtmdet_ins.assigner import DynamicSoftLabelAssigner
from instaseg.models.rtmdet_ins.backbone import CSPNeXt
from instaseg.models.rtmdet_ins.decode import detect_single
from instaseg.models.rtmdet_ins.heads import RTMDetInsHead, dynamic_mask_logits
from instaseg.models.rtmdet_ins.losses import quality_focal_loss
from instaseg.models.rtmdet_ins.neck import CSPNeXtPAFPN

DICE_EPS = 5e-6  # the published Dice loss's smoothing


class RTMDetIns(TransformDetector):
    quantization = QuantizationSettings(
        float_computed_products=True,
        why="the dynamic mask head convolves per-instance kernels, computed from the picture, with shared mask "
        "features: those products make the mask logits and their ranges change per instance, so they stay in "
        "float (a small share of the time); the rest as convolutional models; not yet measured on a trained model"
    )

    def __init__(self, num_classes: int, cfg: dict, min_size: int, max_size: int, test_cfg: dict):
        super().__init__()
        self.cfg, self.test_cfg = dict(cfg), dict(test_cfg)
        self.transform = resize_transform(min_size, max_size)
        self.backbone = CSPNeXt(cfg["deepen"], cfg["widen"])
        self.neck = CSPNeXtPAFPN(self.backbone.out_channels, cfg["neck_channels"], cfg["neck_blocks"])
        self.head = RTMDetInsHead(
            num_classes,
            cfg["neck_channels"],
            cfg["feat_channels"],
            stacked_convs=cfg["stacked_convs"],
            num_prototypes=cfg["num_prototypes"],
            dyconv_channels=cfg["dyconv_channels"],
            num_dyconvs=cfg["num_dyconvs"],
        )
        self.assigner = DynamicSoftLabelAssigner(topk=cfg["assigner_topk"])
        self.mask_stride = self.head.strides[0]  # the stride of the low-res masks raw_forward gives

    def _features(self, batch: torch.Tensor):
        cls, reg, kern, protos = self.head(self.neck(self.backbone(batch)))
        priors = make_priors([tuple(c.shape[-2:]) for c in cls], self.head.strides, batch.device)
        return flatten_levels(cls), flatten_levels(reg), flatten_levels(kern), protos, priors

    def full_size(self, out: RawOutput, input_size: tuple[int, int], image_size: tuple[int, int]) -> dict:
        return box_cropped_output(out, self.mask_stride, input_size, image_size)

    def raw_outputs(self, batch: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Per image of a normalised, padded batch: (boxes [N,4] in the batch frame, scores [N], labels [N] 1..K,
        mask probabilities [N, H/8, W/8] covering the padded batch frame)."""
        cls, reg, kern, protos, priors = self._features(batch)
        boxes = distance_to_boxes(priors[None], reg)
        return [
            detect_single(cls[b].sigmoid(), boxes[b], kern[b], priors, protos[b], self.head, self.test_cfg)
            for b in range(batch.shape[0])
        ]

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        """The contract's raw path: `raw_outputs` with each image's boxes clipped to its (h, w)."""
        return [
            RawOutput(clip_boxes(boxes, h, w), scores, labels, masks)
            for (boxes, scores, labels, masks), (h, w) in zip(self.raw_outputs(batch), image_sizes, strict=True)
        ]

    # ---- training ----
    def losses(self, batch: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        cls, reg, kern, protos, priors = self._features(batch)
        boxes = distance_to_boxes(priors[None], reg)
        # zero terms keep every branch in the graph when a batch has no positives (DDP wants all gradients)
        cls_sum, box_sum, mask_sum = cls.new_zeros(()), reg.sum() * 0, protos.sum() * 0 + kern.sum() * 0
        cls_norm, num_pos = cls.new_zeros(()), 0
        for b, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"].float(), target["labels"].long() - 1
            gt_masks = pad_masks(target["masks"], batch.shape[-2:])
            box_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
            centers = mask_centers(gt_masks, box_centers) if len(gt_boxes) else gt_boxes[:, :2]
            asg = self.assigner(cls[b].detach(), boxes[b].detach(), priors, gt_boxes, gt_labels, centers)
            labels = gt_labels[asg.gt_index.clamp(min=0)] if len(gt_labels) else asg.gt_index.clamp(min=0)
            cls_sum = cls_sum + quality_focal_loss(cls[b], asg.gt_index, labels, asg.iou)
            cls_norm = cls_norm + asg.iou.sum()
            pos = (asg.gt_index >= 0).nonzero().squeeze(1)
            if pos.numel() == 0:
                continue
            gt_of = asg.gt_index[pos]
            box_sum = box_sum + giou_loss(boxes[b][pos], gt_boxes[gt_of], asg.iou[pos])
            mask_sum = mask_sum + self._mask_loss(protos[b], kern[b][pos], priors[pos], gt_masks[gt_of])
            num_pos += int(pos.numel())
        norm = cls_norm.clamp(min=1.0)  # the box loss shares it: positives' IoUs are exactly cls_norm's terms
        w = self.cfg
        return {
            "loss_cls": w["loss_cls_weight"] * cls_sum / norm,
            "loss_box": w["loss_box_weight"] * box_sum / norm,
            "loss_mask": w["loss_mask_weight"] * mask_sum / max(num_pos, 1),
        }

    def _mask_loss(self, protos, kernels, priors, gt_masks) -> torch.Tensor:
        """Dice at stride ``mask_loss_stride`` (4): logits upsampled 2x from stride 8, ground truth subsampled."""
        stride, loss_stride = self.mask_stride, int(self.cfg["mask_loss_stride"])
        logits = dynamic_mask_logits(protos, kernels, priors[:, :2], priors[:, 2], self.head.dyn_sizes, stride)
        scale = stride // loss_stride
        if scale > 1:
            logits = F.interpolate(logits[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
        start = loss_stride // 2
        gt = gt_masks[:, start::loss_stride, start::loss_stride]
        return dice_loss(logits[:, : gt.shape[1], : gt.shape[2]], gt, DICE_EPS).sum()
