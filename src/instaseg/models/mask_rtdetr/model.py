"""Mask-RT-DETR on the detector contract: ``model(images, targets) -> losses`` in training, ``model(images) ->
[{boxes, labels, scores, masks [N,1,H,W]}]`` at the input images' resolution in evaluation (torchvision's
convention), and ``raw_forward`` for instaseg's predictor and export: no NMS, the best ``eval.max_dets``
(query, class) pairs, masks as logits over the padded input at stride 4 (``mask_stride``).

Post-processing resamples each mask's logits over the whole picture and keeps the pixels above the threshold, as
PaddleDetection's DETRPostProcess does (``mask_logits``; ``mask_box_crop`` False: a query's mask is its own, not cut
to its box, which the set loss never taught it to respect).

Pre-processing is torchvision's GeneralizedRCNNTransform with the published normalisation (RGB pixels / 255, no
mean or std: PaddleDetection's NormalizeImage with norm_type none), resize by the recipe rule, zero padding to a
multiple of 32: the `InputSpec` every architecture shares. Boxes inside the network are
(cx, cy, w, h) normalised to the padded batch.
"""

from __future__ import annotations

import torch

from instaseg.models.detector import QuantizationSettings, RawOutput, TransformDetector, pad_masks, resize_transform
from instaseg.models.mask_rtdetr.assigner import HungarianMatcher
from instaseg.models.mask_rtdetr.backbone import HGNetV2
from instaseg.models.mask_rtdetr.decode import detect_single
from instaseg.models.mask_rtdetr.denoising import build_denoising
from instaseg.models.mask_rtdetr.heads import MaskTransformer
from instaseg.models.mask_rtdetr.losses import SetCriterion
from instaseg.models.mask_rtdetr.neck import MaskHybridEncoder
from instaseg.models.mask_rtdetr.recipe import LOSS_TERMS

MASK_STRIDE = 4


class MaskRTDETR(TransformDetector):
    mask_stride = MASK_STRIDE
    mask_logits = True
    mask_box_crop = False
    quantization = QuantizationSettings(
        preset="performance",
        transformer=True,
        smooth_quant=None,
        range_estimator="extremes",
        picture_range=True,
        why="NNCF's transformer model type (attention patterns; it keeps softmax and normalisation in float), "
        "SmoothQuant off (it moves activation outliers into the weights of the matrix products, which with a few "
        "hundred calibration pictures disturbed the box refinement: NNCF's defaults cost mask AP 10.7 -> 2.4 and "
        "box AP 9.2 -> 0.4 on the fast recipe). Symmetric activation ranges (performance preset): the mixed "
        "preset's zero points cost the fast recipe's INT8 network at 256 px all of its gain (1.04x fp32's speed, 1 "
        "thread). The query x prototype products that make the masks are quantized too: in float they took 0.6 of "
        "the INT8 network's 7.3 ms, and quantized the held-out mask AP was no lower (seed 0: 28.5 fp32, 27.9 with "
        "them in float, 28.0 quantized; seed 1: 30.3, 30.1, 30.2). The picture input's quantizer spans the whole "
        "[0, 1] (picture_range): calibrated, it stopped at grey level 219. Activation ranges are the calibration "
        "pictures' extremes: with NNCF's default, the mean of each picture's extremes, the backbone clipped (the "
        "input of the stem's third convolution, stem2b, was cut at 5.2 where it reached 11) and its signal fell to "
        "8 dB by the last stage (bench/int8_signal.py), 11-13 dB with the extremes. Plain INT8 over four seeds "
        "of the fast recipe, mask AP points lost on 400 held-out pictures (bench/int8_accuracy.py's) and 400 "
        "more drawn with another seed: 0.46 and 0.70 on average with the default ranges (at most 1.47), 0.18 "
        "and 0.43 with the extremes (at most 0.89)"
    )

    def __init__(self, num_classes: int, cfg: dict, min_size: int, max_size: int, test_cfg: dict):
        super().__init__()
        self.cfg, self.test_cfg, self.num_classes = dict(cfg), dict(test_cfg), num_classes
        # pixels / 255 and nothing else, as the published weights were trained
        rule = {"resize_order": cfg.get("resize_order", "float"), "normalisation": cfg.get("normalisation", "unit")}
        self.transform = resize_transform(min_size, max_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), **rule)
        dim = int(cfg["hidden_dim"])
        self.backbone = HGNetV2(cfg["arch"], frozen_norm=cfg["norm"] == "frozen_bn")
        self.encoder = MaskHybridEncoder(
            self.backbone.out_channels, dim, int(cfg["encoder_level"]), int(cfg["encoder_layers"]), 8,
            int(cfg["encoder_ffn"]), float(cfg["expansion"]), int(cfg["csp_blocks"]),
            tuple(cfg["mask_feat_channels"]), int(cfg["num_prototypes"]),
        )  # fmt: skip
        self.transformer = MaskTransformer(
            num_classes, dim, int(cfg["decoder_dim"]), 3, int(cfg["num_queries"]), int(cfg["decoder_layers"]),
            int(cfg["decoder_heads"]), int(cfg["decoder_ffn"]), int(cfg["decoder_points"]),
            int(cfg["num_prototypes"]), bool(cfg["mask_enhanced"]),
        )  # fmt: skip
        weights = {k: float(cfg[f"loss_{k}_weight"]) for k in LOSS_TERMS}
        matcher = HungarianMatcher(weights, int(cfg["num_sample_points"]))
        self.criterion = SetCriterion(num_classes, weights, matcher, int(cfg["num_sample_points"]))

    def _run(self, batch: torch.Tensor, dn=None):
        fused, mask_feat = self.encoder(self.backbone(batch))
        return self.transformer(fused, mask_feat, dn)

    def raw_forward(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawOutput]:
        """The contract's raw path: the best ``max_dets`` (query, class) pairs by score (no NMS: the set loss
        taught one query per object), those above ``score_threshold`` kept."""
        layers, _, _ = self._run(batch)
        final = layers[-1]
        scale = torch.stack([torch.tensor(batch.shape[-1]), torch.tensor(batch.shape[-2])]).to(batch).repeat(2)
        return [
            RawOutput(*detect_single(final.logits[b], final.boxes[b], final.masks[b], scale, size, self.test_cfg))
            for b, size in enumerate(image_sizes)
        ]

    def make_outputs_busy(self) -> None:
        """Every query confident in every class, masks partly filled: a random-init model then keeps
        ``max_dets`` detections per image, as a trained one does on a busy picture."""
        with torch.no_grad():
            self.transformer.score_head.bias.fill_(3.0)

    # ---- training ----
    def _network_targets(self, batch: torch.Tensor, targets: list[dict]) -> list[dict]:
        """Labels 0..K-1, boxes (cx, cy, w, h) / padded size, masks float over the padded batch."""
        h, w = batch.shape[-2:]
        scale = batch.new_tensor([w, h, w, h])
        out = []
        for t in targets:
            boxes = t["boxes"].float() / scale
            cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)
            masks = pad_masks(t["masks"], (h, w)).float()
            out.append({"labels": t["labels"].long() - 1, "boxes": cxcywh, "masks": masks})
        return out

    def losses(self, batch: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        targets = self._network_targets(batch, targets)
        cfg = self.cfg
        h, w = batch.shape[-2:]
        queries = min(int(cfg["num_queries"]), sum((h // s) * (w // s) for s in (8, 16, 32)))  # as selected
        dn = build_denoising(
            [t["labels"] for t in targets], [t["boxes"] for t in targets],
            self.transformer.denoising_class_embed.weight, queries, int(cfg["num_denoising"]),
            float(cfg["label_noise_ratio"]), float(cfg["box_noise_scale"]),
        )  # fmt: skip
        layers, encoder_out, initial = self._run(batch, dn)
        losses = self.criterion(layers, encoder_out, initial, dn, targets)
        if dn is None:  # the denoising embedding in the graph all the same (DDP wants all gradients)
            losses["loss_class_dn"] = losses["loss_class_dn"] + self.transformer.denoising_class_embed.weight.sum() * 0
        return losses

