"""PP-YOLOE-seg on the detector contract: ``model(images, targets) -> losses`` in training, ``model(images) ->
[{boxes, labels, scores, masks [N,1,H,W]}]`` at the input images' resolution in evaluation (torchvision's
convention), and ``raw_forward`` for instaseg's predictor and export: image-frame mask probabilities at stride 4
(``mask_stride``), not pasted.

Pre-processing is torchvision's GeneralizedRCNNTransform with the published normalisation (pixels / 255, no
mean or std), resize by the recipe rule, zero padding to a multiple of 32. ``model.mask_resample: two_step``
(``ppyoloe_seg_s``) makes the final masks as PaddleDetection does: the stride-4 probabilities upsampled x4 to the
input, cut at the box's input pixels, then resized to the original (``mask_resample``).

Assignment: ATSS for the first ``static_assigner_steps`` training steps, then task-aligned. The model counts its
own training steps in a buffer (``train_steps``), so the count is saved in checkpoints and a resumed run goes on
where it stopped; the training forward needs to know nothing of epochs.
"""

from __future__ import annotations

import torch

from instaseg.models.common.losses import giou_loss, varifocal_loss
from instaseg.models.common.masks import box_cropped_output
from instaseg.models.common.points import distance_to_boxes, flatten_levels, make_priors
from instaseg.models.detector import QuantizationSettings, RawOutput, TransformDetector, pad_masks, resize_transform
from instaseg.models.ppyoloe_seg.assigner import ATSSAssigner, TaskAlignedAssigner
from instaseg.models.ppyoloe_seg.backbone import CSPResNet, scaled_channels, scaled_depth
from instaseg.models.ppyoloe_seg.decode import detect_single
from instaseg.models.ppyoloe_seg.heads import PROTOTYPE_STRIDE, ETHead, anchor_points
from instaseg.models.ppyoloe_seg.losses import cropped_mask_bce, distribution_focal_loss
from instaseg.models.ppyoloe_seg.neck import CustomCSPPAN

NECK_CHANNELS = (192, 384, 768)  # published widths at strides 8, 16, 32 before the width multiplier
NECK_BLOCKS = 3
PROTO_CHANNELS = 256


class PPYOLOESeg(TransformDetector):
    mask_stride = PROTOTYPE_STRIDE
    quantization = QuantizationSettings(
        float_computed_products=True,
        why="masks are per-instance coefficients x prototypes (YOLACT style): that product makes the mask logits "
        "from two computed operands whose ranges change per picture, so it stays in float (a small share of the "
        "time); the rest as convolutional models. The fast recipe, two seeds, mask AP on 400 held-out pictures "
        "(bench/int8_accuracy.py): 16.4 -> 22.2 and 24.4 -> 25.5, INT8 clipping the outliers of an under-trained "
        "fp32 model (README); the picture input's quantizer over every grey level (picture_range) gained nothing "
        "there (seed 0: 22.2 -> 22.1, and 21.7 -> 21.4 on 400 more pictures)"
    )

    def __init__(self, num_classes: int, cfg: dict, min_size: int, max_size: int, test_cfg: dict):
        super().__init__()
        self.cfg, self.test_cfg = dict(cfg), dict(test_cfg)
        rule = {"resize_order": cfg.get("resize_order", "float"), "normalisation": cfg.get("normalisation", "unit")}
        self.transform = resize_transform(min_size, max_size, mean=(0.0,) * 3, std=(1.0,) * 3, **rule)
        self.mask_resample = str(cfg.get("mask_resample", "direct"))
        deepen, widen = float(cfg["deepen"]), float(cfg["widen"])
        self.backbone = CSPResNet(deepen, widen, use_alpha=bool(cfg["use_alpha"]))
        neck_widths = [scaled_channels(c, widen) for c in NECK_CHANNELS]
        self.neck = CustomCSPPAN(self.backbone.out_channels, neck_widths, scaled_depth(NECK_BLOCKS, deepen))
        self.head = ETHead(
            num_classes,
            self.neck.out_channels,
            reg_max=int(cfg["reg_max"]),
            num_masks=int(cfg["num_masks"]),
            proto_channels=scaled_channels(PROTO_CHANNELS, widen),
        )
        self.task_aligned = TaskAlignedAssigner(
            int(cfg["assigner_topk"]), float(cfg["assigner_alpha"]), float(cfg["assigner_beta"])
        )
        self.atss = ATSSAssigner(topk=9, anchor_scale=5.0)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    def _features(self, batch: torch.Tensor, prototypes: bool = True):
        """Flattened class logits [B,A,K], distance logits [B,A,4(R+1)], coefficients [B,A,M], prototypes (None
        unless ``prototypes``), points [A,3] (cell centre x, y, stride), the number of points per level and the
        neck's maps."""
        feats = self.neck(self.backbone(batch))
        cls, reg, coef, protos = self.head(feats, prototypes=prototypes)
        sizes = [tuple(c.shape[-2:]) for c in cls]
        priors = make_priors(sizes, self.head.strides, batch.device)
        points = torch.cat([anchor_points(priors), priors[:, 2:]], dim=1)
        level_sizes = [h * w for h, w in sizes]
        return flatten_levels(cls), flatten_levels(reg), flatten_levels(coef), protos, points, level_sizes, feats

    def _boxes(self, reg: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return distance_to_boxes(points, self.head.distances(reg) * points[:, 2:])

    def full_size(self, out: RawOutput, input_size: tuple[int, int], image_size: tuple[int, int]) -> dict:
        return box_cropped_output(out, self.mask_stride, input_size, image_size, resample=self.mask_resample)

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        # prototypes only where the kept boxes need them (`detect_single`), not over the whole picture
        cls, reg, coef, _, points, _, feats = self._features(batch, prototypes=False)
        boxes = self._boxes(reg, points)
        scores = cls.sigmoid()
        protos, stride = self.head.prototypes, self.mask_stride
        return [
            RawOutput(*detect_single(scores[b], boxes[b], coef[b], feats[0][b], protos, size, stride, self.test_cfg))
            for b, size in enumerate(image_sizes)
        ]

    def make_outputs_busy(self) -> None:
        """Every point confident and mask coefficients that differ from point to point, so random-init outputs
        keep ``max_dets`` detections with partly filled masks, as a trained model's on a busy picture."""
        with torch.no_grad():
            for cls, ins in zip(self.head.pred_cls, self.head.pred_ins, strict=True):
                cls.bias.fill_(2.0)
                ins.weight.normal_(0.0, ins.weight[0].numel() ** -0.5 * 4)
                ins.bias.normal_(0.0, 1.0)

    # ---- training ----
    def losses(self, batch: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        cls, reg, coef, protos, points, level_sizes, _ = self._features(batch)
        boxes = self._boxes(reg, points)
        static = int(self.train_steps) < int(self.cfg["static_assigner_steps"])
        self.train_steps += 1
        zero = cls.new_zeros(())
        # zero terms keep every branch in the graph when a batch has no positives (DDP wants all gradients)
        sums = {"cls": zero, "iou": reg.sum() * 0, "dfl": zero, "mask": protos.sum() * 0 + coef.sum() * 0}
        score_sum = zero
        for b, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"].float(), target["labels"].long() - 1
            pred_boxes = boxes[b].detach()
            if static:
                asg = self.atss(pred_boxes, points[:, :2], points[:, 2], level_sizes, gt_boxes)
            else:
                asg = self.task_aligned(cls[b].detach().sigmoid(), pred_boxes, points[:, :2], gt_boxes, gt_labels)
            pos = (asg.gt_index >= 0).nonzero().squeeze(1)
            gt_of = asg.gt_index[pos]
            # float32 targets and logits: under mixed precision the head's logits are half, the assigner's float
            soft = torch.zeros(cls[b].shape, device=cls.device).index_put_((pos, gt_labels[gt_of]), asg.score[pos])
            sums["cls"] = sums["cls"] + varifocal_loss(cls[b].float(), soft, soft > 0)
            score_sum = score_sum + asg.score.sum()
            if pos.numel() == 0:
                continue
            weight = asg.score[pos]
            sums["iou"] = sums["iou"] + giou_loss(boxes[b][pos], gt_boxes[gt_of], weight)
            sides = self._side_distances(points[pos], gt_boxes[gt_of])
            sums["dfl"] = sums["dfl"] + (distribution_focal_loss(reg[b][pos], sides, self.head.reg_max) * weight).sum()
            gt_masks = self._mask_targets(target["masks"], batch.shape[-2:])[gt_of]
            sums["mask"] = sums["mask"] + self._mask_loss(protos[b], coef[b][pos], gt_masks, gt_boxes[gt_of])
        norm = score_sum.clamp(min=1.0)
        w = self.cfg
        return {
            "loss_cls": w["loss_cls_weight"] * sums["cls"] / norm,
            "loss_iou": w["loss_iou_weight"] * sums["iou"] / norm,
            "loss_dfl": w["loss_dfl_weight"] * sums["dfl"] / norm,
            "loss_mask": w["loss_mask_weight"] * sums["mask"] / norm,
        }

    @staticmethod
    def _side_distances(points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """(left, top, right, bottom) from each point [N,3] to its object's box, in the point's strides."""
        xy, stride = points[:, :2], points[:, 2:]
        return torch.cat([xy - gt_boxes[:, :2], gt_boxes[:, 2:] - xy], dim=1) / stride

    def _mask_targets(self, masks: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
        """Object masks at the prototype stride: the top-left pixel of each stride x stride cell of the padded
        input, as PaddleDetection downsamples them (Paddle's nearest interpolation takes pixel floor(i * stride)).
        The published weights learned their prototypes against these targets."""
        s = self.mask_stride
        return pad_masks(masks, padded)[:, ::s, ::s]

    def _mask_loss(self, protos, coefficients, gt_masks, gt_boxes) -> torch.Tensor:
        """Summed per-instance BCE at the prototype stride over the cells whose top-left corner lies in the
        object's box, divided by the box's area in cells: PaddleDetection's crop_mask on the box / stride and its
        mean over the map divided by the box's share of the (640 x 640) input, which are the same there."""
        m, h, w = protos.shape
        logits = (coefficients @ protos.reshape(m, h * w)).reshape(-1, h, w)
        s = self.mask_stride
        xs = torch.arange(w, device=logits.device, dtype=gt_boxes.dtype) * s
        ys = torch.arange(h, device=logits.device, dtype=gt_boxes.dtype) * s
        inside_x = (xs[None] >= gt_boxes[:, 0:1]) & (xs[None] < gt_boxes[:, 2:3])
        inside_y = (ys[None] >= gt_boxes[:, 1:2]) & (ys[None] < gt_boxes[:, 3:4])
        crop = (inside_y[:, :, None] & inside_x[:, None, :]).to(logits.dtype)
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]) / s**2
        return cropped_mask_bce(logits, gt_masks, crop, area).sum()
