"""SOLOv2 on the detector contract: ``model(images, targets) -> losses`` in training, ``model(images) ->
[{boxes, labels, scores, masks [N,1,H,W]}]`` at the input images' resolution in evaluation (torchvision's
convention), and ``raw_forward`` for instaseg's predictor and export: mask probabilities over the padded input
at stride 4 (``mask_stride``), not pasted, with each mask's box read from the mask itself (SOLO has no box branch).

Pre-processing is torchvision's GeneralizedRCNNTransform (ImageNet mean/std on [0, 1] RGB, resize by the recipe
rule, zero padding to a multiple of 32), the `InputSpec` every architecture shares, except that each resized side is
rounded half up (``size_rounding``) as both references do, where torchvision floors.

``model.mask_resample: two_step`` (``solov2_r50_fpn``) resamples the masks as MMDetection does (x4 to the padded
input, cut, resized to the original; ``mask_resample``). A box is read from its mask's one-step upsampling, so
with another geometry a mask may reach past its box: such masks are not cut to their boxes (``mask_box_crop``),
as MMDetection, whose SOLOv2 has no boxes, cuts none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instaseg.models.common.backbones import FeaturePyramidBackbone
from instaseg.models.common.losses import dice_loss
from instaseg.models.common.masks import box_cropped_output
from instaseg.models.common.points import flatten_levels
from instaseg.models.detector import (
    QuantizationSettings,
    RawOutput,
    TransformDetector,
    clip_boxes,
    pad_masks,
    padded_size,
    resize_transform,
)
from instaseg.models.solov2.assigner import assign, mask_targets
from instaseg.models.solov2.decode import TestConfig, detect_single, point_nms
from instaseg.models.solov2.heads import LEVEL_STRIDES, MaskFeatureHead, SOLOv2Head
from instaseg.models.solov2.losses import DICE_EPS, focal_loss

MASK_STRIDE = 4


class SOLOv2(TransformDetector):
    mask_stride = MASK_STRIDE
    quantization = QuantizationSettings(
        float_computed_products=True,
        why="NNCF's defaults already kept most of mask AP on the fast recipe (23.7 -> 23.0); the dynamic "
        "kernels x mask features product, which makes the mask logits, stays in float, and the matrix-NMS score "
        "arithmetic is no longer quantized; not yet measured with these settings"
    )

    def __init__(
        self,
        backbone: FeaturePyramidBackbone,
        num_classes: int,
        cfg: dict,
        min_size: int,
        max_size: int,
        test_cfg: TestConfig,
    ):
        super().__init__()
        self.cfg, self.test_cfg = dict(cfg), test_cfg
        # MMDetection's and PaddleDetection's Resize(keep_ratio) round each resized side half up; torchvision floors
        rule = {"resize_order": cfg.get("resize_order", "float"), "normalisation": cfg.get("normalisation", "unit")}
        self.transform = resize_transform(min_size, max_size, size_rounding="round", **rule)
        self.backbone = backbone
        channels, groups = backbone.out_channels, int(cfg["gn_groups"])
        self.mask_head = MaskFeatureHead(channels, cfg["mask_feat_channels"], cfg["kernel_channels"], groups)
        self.head = SOLOv2Head(
            num_classes,
            channels,
            cfg["head_channels"],
            cfg["stacked_convs"],
            cfg["num_grids"],
            cfg["kernel_channels"],
            groups,
        )
        strides = [torch.full((s * s,), float(st)) for s, st in zip(cfg["num_grids"], LEVEL_STRIDES, strict=True)]
        self.register_buffer("cell_strides", torch.cat(strides), persistent=False)
        self.mask_resample = str(cfg.get("mask_resample", "direct"))
        self.mask_box_crop = self.mask_resample == "direct"

    def full_size(self, out: RawOutput, input_size: tuple[int, int], image_size: tuple[int, int]) -> dict:
        if self.mask_resample == "direct":
            return super().full_size(out, input_size, image_size)
        resample = self.mask_resample
        return box_cropped_output(out, self.mask_stride, input_size, image_size, crop=False, resample=resample)

    def _features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits [B,A,K], kernels [B,A,E], mask features [B,E,H/4,W/4]) over all A grid cells."""
        feats = list(self.backbone(batch).values())  # P2..P5 and the pooled P6
        cls, kernels = self.head(feats)
        scale = float(self.cfg["kernel_scale"])
        kernels = [k * scale for k in kernels] if scale != 1.0 else kernels
        return cls, kernels, self.mask_head(feats[:4])

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        """The contract's raw path. The grids divide the padded input, so an image padded beyond its own multiple
        of 32 (a batch of mixed sizes) would see other grids: such a batch runs image by image on its own padding,
        as the exported graph does, and its masks are padded back to the batch frame."""
        if batch.shape[0] > 1:  # eager only: the exported graph takes one image
            stride = int(self.transform.size_divisible)
            own = [(padded_size(h, stride), padded_size(w, stride)) for h, w in image_sizes]
            if any(size != tuple(batch.shape[-2:]) for size in own):
                pairs = zip(image_sizes, own, strict=True)
                return [self._alone(batch[i : i + 1], size, pad) for i, (size, pad) in enumerate(pairs)]
        return self._detect(batch, image_sizes)

    def _alone(self, image: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> RawOutput:
        out = self._detect(image[..., : padded[0], : padded[1]], [size])[0]
        frame = [s // self.mask_stride for s in image.shape[-2:]]
        masks = F.pad(out.masks, (0, frame[1] - out.masks.shape[-1], 0, frame[0] - out.masks.shape[-2]))
        return out._replace(masks=masks)

    def _detect(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        cls, kernels, mask_feats = self._features(batch)
        scores = flatten_levels([point_nms(c.sigmoid()) for c in cls])
        kernels = flatten_levels(kernels)
        outputs = []
        for b, (h, w) in enumerate(image_sizes):
            boxes, s, labels, masks = detect_single(
                scores[b], kernels[b], mask_feats[b], self.cell_strides, self.mask_stride, self.test_cfg
            )
            outputs.append(RawOutput(clip_boxes(boxes, h, w), s, labels, masks))
        return outputs

    def make_outputs_busy(self) -> None:
        """Every cell confident, kernels that differ from cell to cell: random-init masks come out partly filled
        and all distinct, so each image keeps ``max_dets`` detections, as a trained model's on a busy picture."""
        with torch.no_grad():
            self.head.conv_cls.bias.fill_(2.0)
            weight = self.head.conv_kernel.weight
            weight.normal_(0.0, weight[0].numel() ** -0.5 * 4)
            self.head.conv_kernel.bias.normal_(0.0, 1.0)

    # ---- training ----
    def losses(self, batch: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        cls, kernels, mask_feats = self._features(batch)
        cls, kernels = flatten_levels(cls), flatten_levels(kernels)
        cfg = self.cfg
        cell_labels, dice_sum, num_pos = [], [], 0
        for b, target in enumerate(targets):
            masks = pad_masks(target["masks"], batch.shape[-2:])
            labels = target["labels"].long() - 1
            asg = assign(target["boxes"].float(), labels, masks, cfg["num_grids"], cfg["scale_ranges"],
                         float(cfg["center_sigma"]))  # fmt: skip
            cell_labels.append(asg.labels)
            # averaged over positive cells, not pairs: a cell two objects claim counts once, as published
            num_pos += int((asg.gt_index >= 0).sum())
            if asg.pairs.numel() == 0:
                continue
            cells, objects = asg.pairs.unbind(1)
            gt = mask_targets(masks, self.mask_stride, bool(cfg["soft_mask_targets"]))[objects]
            logits = kernels[b, cells] @ mask_feats[b].flatten(1)
            dice_sum.append(dice_loss(logits, gt.flatten(1), DICE_EPS).sum())
        loss_cls = focal_loss(cls.flatten(0, 1), torch.cat(cell_labels), cfg["focal_gamma"], cfg["focal_alpha"])
        # zero terms keep the kernel branch and the mask feature in the graph when no cell is positive (DDP)
        mask_sum = kernels.sum() * 0 + mask_feats.sum() * 0 + sum(dice_sum, torch.zeros((), device=batch.device))
        return {
            "loss_cls": cfg["loss_cls_weight"] * loss_cls / (num_pos + 1),
            "loss_mask": cfg["loss_mask_weight"] * mask_sum / max(num_pos, 1),
        }

