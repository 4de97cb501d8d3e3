"""RTMDet-Ins head: per-level classification, box and kernel branches, and the prototype (mask feature) branch.

- One tower of ``stacked_convs`` 3x3 convs feeds both the class and the box predictors; its conv weights are shared
  across pyramid levels while each level keeps its own BatchNorm ("SepBN"). This is how MMDetection's published
  RTMDetInsSepBNHead computes (its ``reg_convs[n]`` is the same module list as ``cls_convs[n]``), so its
  checkpoints hold no separate box tower, and one tower costs half of two. The kernel tower (its convs per level)
  and the 1x1 predictors are per level.
- The mask feature module fuses the three levels at stride 8 and projects to ``num_prototypes`` channels.
- Each detection's kernel (169 numbers for 8 prototypes) parameterises three 1x1 convs (10->8->8->1) applied to
  [relative coordinates (2), prototypes (8)]. They run as batched matrix products, one matrix per instance, so the
  graph exports as plain MatMul nodes (no grouped conv with data-dependent groups).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.rtmdet_ins.layers import ConvBNAct


class MaskFeatModule(nn.Module):
    """Levels upsampled to stride 8, concatenated, fused (1x1), four 3x3 conv-BN-SiLU, projected to prototypes."""

    def __init__(self, in_channels: int, feat_channels: int, num_levels: int = 3, num_prototypes: int = 8):
        super().__init__()
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(
            *(ConvBNAct(in_channels if i == 0 else feat_channels, feat_channels, 3) for i in range(4))
        )
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.projection(self.stacked_convs(self.fusion_conv(torch.cat(fused, dim=1))))


def dynamic_layer_sizes(num_prototypes: int, channels: int, num_layers: int) -> list[tuple[int, int]]:
    """(out, in) of each dynamic 1x1 conv: the first reads prototypes + 2 coordinates, the last gives one logit."""
    sizes = []
    for i in range(num_layers):
        cin = num_prototypes + 2 if i == 0 else channels
        cout = 1 if i == num_layers - 1 else channels
        sizes.append((cout, cin))
    return sizes


class RTMDetInsHead(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        strides: tuple[int, ...] = (8, 16, 32),
        stacked_convs: int = 2,
        num_prototypes: int = 8,
        dyconv_channels: int = 8,
        num_dyconvs: int = 3,
        share_conv: bool = True,
    ):
        super().__init__()
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.dyn_sizes = dynamic_layer_sizes(num_prototypes, dyconv_channels, num_dyconvs)
        self.num_params = sum(o * i + o for o, i in self.dyn_sizes)

        def branch() -> nn.ModuleList:
            return nn.ModuleList(
                nn.Sequential(
                    *(
                        ConvBNAct(in_channels if i == 0 else feat_channels, feat_channels, 3)
                        for i in range(stacked_convs)
                    )
                )
                for _ in strides
            )

        self.cls_convs, self.kernel_convs = branch(), branch()  # cls_convs feed the box predictor too
        if share_conv:  # one conv per depth for all levels; the BatchNorms stay per level
            for level in self.cls_convs[1:]:
                for layer, first in zip(level, self.cls_convs[0], strict=True):
                    layer.conv = first.conv
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, 1) for _ in strides)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, 1) for _ in strides)
        self.rtm_kernel = nn.ModuleList(nn.Conv2d(feat_channels, self.num_params, 1) for _ in strides)
        self.mask_head = MaskFeatModule(in_channels, feat_channels, len(strides), num_prototypes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        prior = -math.log((1 - 0.01) / 0.01)  # initial foreground probability 0.01 (focal-loss init)
        for cls, reg in zip(self.rtm_cls, self.rtm_reg, strict=True):
            nn.init.constant_(cls.bias, prior)
            nn.init.constant_(reg.bias, 1.0)  # boxes start one stride from the point on each side

    def forward(self, feats: list[torch.Tensor]) -> tuple[list, list, list, torch.Tensor]:
        """Per level: class logits [B,K,h,w], box distances in pixels [B,4,h,w] (l, t, r, b), kernels
        [B,P,h,w]; and the prototypes [B,num_prototypes,H/8,W/8]."""
        cls_out, reg_out, kernel_out = [], [], []
        for i, (x, stride) in enumerate(zip(feats, self.strides, strict=True)):
            feat = self.cls_convs[i](x)
            cls_out.append(self.rtm_cls[i](feat))
            kernel_out.append(self.rtm_kernel[i](self.kernel_convs[i](x)))
            reg_out.append(F.relu(self.rtm_reg[i](feat)) * stride)
        return cls_out, reg_out, kernel_out, self.mask_head(feats)


def relative_coordinates(points: torch.Tensor, strides: torch.Tensor, h: int, w: int, mask_stride: int) -> torch.Tensor:
    """[N,2,h*w]: (instance point - map pixel position) / (8 x instance stride), the published normalisation."""
    ys = torch.arange(h, device=points.device, dtype=points.dtype) * mask_stride
    xs = torch.arange(w, device=points.device, dtype=points.dtype) * mask_stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=0)  # [2, h*w]
    return (points[:, :, None] - grid[None]) / (strides[:, None, None] * 8.0)


def dynamic_mask_logits(
    prototypes: torch.Tensor,
    kernels: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    dyn_sizes: list[tuple[int, int]],
    mask_stride: int,
) -> torch.Tensor:
    """Mask logits [N,h,w] of N instances on one image's prototypes [C,h,w], from their kernels [N,P].

    The kernel holds all weights (layer by layer, each [out, in] row-major) and then all biases.
    """
    n = kernels.shape[0]
    c, h, w = prototypes.shape
    coords = relative_coordinates(points, strides, h, w, mask_stride)
    x = torch.cat([coords, prototypes.reshape(1, c, h * w).expand(n, c, h * w)], dim=1)  # [N, 2+C, h*w]
    weight_numel = [o * i for o, i in dyn_sizes]
    splits = torch.split(kernels, weight_numel + [o for o, _ in dyn_sizes], dim=1)
    weights, biases = splits[: len(dyn_sizes)], splits[len(dyn_sizes) :]
    for k, ((o, i), wk, bk) in enumerate(zip(dyn_sizes, weights, biases, strict=True)):
        x = torch.bmm(wk.reshape(n, o, i), x) + bk.reshape(n, o, 1)
        if k < len(dyn_sizes) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)
