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

    def forward(self, feats: list[torch.Tensor], kernels: bool = True) -> tuple[list, list, list, torch.Tensor]:
        """Per level: class logits [B,K,h,w], box distances in pixels [B,4,h,w] (l, t, r, b), kernels
        [B,P,h,w]; and the prototypes [B,num_prototypes,H/8,W/8]. ``kernels`` False leaves the kernel maps out
        (an empty list): inference computes kernels only where instances were kept (``kernels_at``)."""
        cls_out, reg_out, kernel_out = [], [], []
        for i, (x, stride) in enumerate(zip(feats, self.strides, strict=True)):
            feat = self.cls_convs[i](x)
            cls_out.append(self.rtm_cls[i](feat))
            if kernels:
                kernel_out.append(self.rtm_kernel[i](self.kernel_convs[i](x)))
            reg_out.append(F.relu(self.rtm_reg[i](feat)) * stride)
        return cls_out, reg_out, kernel_out, self.mask_head(feats)

    def kernels_at(self, feats: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """Kernels [N,P] at N prior points (x, y, stride) [N,3] of one image's pyramid ``feats`` (each [C,h,w]): the
        dense kernel maps' values at those points, computed from the (2d+1) x (2d+1) window that the tower's d
        stacked 3x3 convs read around each point.

        Why: the dense kernel tower costs as much as the class tower (2.8 of the 21 GFLOPs of rtmdet_ins_tiny at
        640 px), and only the kept instances' kernels are ever used. Outside the map the windows hold zeros after
        every conv, as the dense convs' zero padding does. Each point goes through every level's tower and keeps
        its own level's result: three times a few MFLOPs per point, and no empty batches in an exported graph."""
        depth = len(self.kernel_convs[0])
        offsets = torch.arange(2 * depth + 1, device=points.device) - depth
        out = points.new_zeros((points.shape[0], self.num_params))
        for level, (x, stride) in enumerate(zip(feats, self.strides, strict=True)):
            rows = (points[:, 1] / stride).round().long()[:, None] + offsets  # [N, 2d+1]
            cols = (points[:, 0] / stride).round().long()[:, None] + offsets
            inside_r = (rows >= 0) & (rows < x.shape[1])
            inside_c = (cols >= 0) & (cols < x.shape[2])
            rows, cols = rows.clamp(0, x.shape[1] - 1), cols.clamp(0, x.shape[2] - 1)
            inside = (inside_r[:, :, None] & inside_c[:, None, :]).unsqueeze(1).to(x.dtype)  # [N,1,2d+1,2d+1]
            # one gather along the flattened map: indexing rows and columns separately exports as transposes of
            # the whole map
            flat = (rows[:, :, None] * x.shape[2] + cols[:, None, :]).reshape(-1)
            window = x.flatten(1).index_select(1, flat).reshape(x.shape[0], -1, len(offsets), len(offsets))
            window = window.transpose(0, 1) * inside  # [N,C,2d+1,2d+1]
            for layer in self.kernel_convs[level]:
                conv = layer.conv
                window = layer.act(layer.bn(F.conv2d(window, conv.weight, conv.bias, 1, 0, 1, conv.groups)))
                inside = inside[:, :, 1:-1, 1:-1]
                window = window * inside
            kernels = self.rtm_kernel[level](window).flatten(1)
            out = torch.where((points[:, 2] == stride)[:, None], kernels, out)
        return out


def pixel_positions(h: int, w: int, mask_stride: int, like: torch.Tensor) -> torch.Tensor:
    """[2, h*w] (x, y) in input pixels of every prototype-map pixel, row-major."""
    ys = torch.arange(h, device=like.device, dtype=like.dtype) * mask_stride
    xs = torch.arange(w, device=like.device, dtype=like.dtype) * mask_stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=0)


def relative_coordinates(points: torch.Tensor, strides: torch.Tensor, h: int, w: int, mask_stride: int) -> torch.Tensor:
    """[N,2,h*w]: (instance point - map pixel position) / (8 x instance stride), the published normalisation."""
    grid = pixel_positions(h, w, mask_stride, points)
    return (points[:, :, None] - grid[None]) / (strides[:, None, None] * 8.0)


def dynamic_mask_logits(
    prototypes: torch.Tensor,
    kernels: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    dyn_sizes: list[tuple[int, int]],
    mask_stride: int,
    shared_prototypes: bool = False,
) -> torch.Tensor:
    """Mask logits [N,h,w] of N instances on one image's prototypes [C,h,w], from their kernels [N,P].

    The kernel holds all weights (layer by layer, each [out, in] row-major) and then all biases.
    ``shared_prototypes`` (inference): the first layer's product with the prototypes is one [N*o, C] x [C, h*w]
    product for all instances, instead of a product with N concatenated copies of them: the same sums in another
    order, without building the [N, 2+C, h*w] input (in an exported 100-instance graph, its broadcast and
    concatenation took more time than the products). Training keeps the concatenated form, whose rounding its
    results were measured with.
    """
    n = kernels.shape[0]
    c, h, w = prototypes.shape
    weight_numel = [o * i for o, i in dyn_sizes]
    splits = torch.split(kernels, weight_numel + [o for o, _ in dyn_sizes], dim=1)
    weights, biases = splits[: len(dyn_sizes)], splits[len(dyn_sizes) :]
    if shared_prototypes:
        x = F.relu(_first_layer_shared(prototypes, weights[0], biases[0], points, strides, dyn_sizes[0], mask_stride))
        layers = list(zip(dyn_sizes, weights, biases, strict=True))[1:]
    else:
        coords = relative_coordinates(points, strides, h, w, mask_stride)
        x = torch.cat([coords, prototypes.reshape(1, c, h * w).expand(n, c, h * w)], dim=1)  # [N, 2+C, h*w]
        layers = list(zip(dyn_sizes, weights, biases, strict=True))
    for k, ((o, i), wk, bk) in enumerate(layers, start=len(dyn_sizes) - len(layers)):
        x = torch.bmm(wk.reshape(n, o, i), x) + bk.reshape(n, o, 1)
        if k < len(dyn_sizes) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)


def _first_layer_shared(
    prototypes: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    points: torch.Tensor,
    strides: torch.Tensor,
    size: tuple[int, int],
    mask_stride: int,
) -> torch.Tensor:
    """The first dynamic layer [N, o, h*w] as one product of all instances' rows with [prototypes; x; y; 1]:
    the relative coordinates (point - pixel) / (8 stride) are linear in the pixel position, so each instance's
    coordinate weights fold into a pixel-position weight and its bias."""
    (o, i), n = size, weight.shape[0]
    c, h, w = prototypes.shape
    weight = weight.reshape(n, o, i)
    coord_w = weight[:, :, :2] / (strides[:, None, None] * 8.0)  # [N, o, 2]
    shift = bias.reshape(n, o) + (coord_w @ points[:, :, None]).squeeze(2)
    rows = torch.cat([weight[:, :, 2:], -coord_w, shift[:, :, None]], dim=2).reshape(n * o, c + 3)
    pixels = pixel_positions(h, w, mask_stride, prototypes)
    pixels = torch.cat([pixels, torch.ones_like(pixels[:1])])  # [3, h*w]: x, y, 1
    return (rows @ torch.cat([prototypes.reshape(c, h * w), pixels])).reshape(n, o, h * w)
