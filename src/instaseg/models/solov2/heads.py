"""SOLOv2's two heads: the category and kernel branches on S x S grids, and the unified mask feature.

- `SOLOv2Head`: each of the five pyramid levels (P2..P6) is resampled to its grid (S x S); a category tower
  (``stacked_convs`` 3x3 conv-GN-ReLU) predicts K class logits per cell and a kernel tower, whose input carries
  two coordinate channels (CoordConv: a kernel must know where its cell is to segment that object and not its
  look-alike), predicts a ``kernel_channels``-d dynamic 1x1 kernel per cell. The towers are shared by all levels
  (GroupNorm normalises per sample, so sharing needs no per-level statistics). P2 is first halved and P6 brought
  to P5's size, as published, so the levels feed the grids at strides 8, 8, 16, 32, 32.
- `MaskFeatureHead`: P2..P5 each go through conv-GN-ReLU(-upsample x2) stages until stride 4 and are summed;
  the coarsest level gets coordinate channels too; a 1x1 conv-GN-ReLU gives the ``kernel_channels`` mask feature
  that every dynamic kernel is applied to (one matrix product per image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# the stride at which each level's grid reads its features (P2 halved, P6 at P5's size)
LEVEL_STRIDES = (8, 8, 16, 32, 32)


class ConvGNReLU(nn.Sequential):
    """Conv (no bias: GroupNorm re-centres) -> GroupNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.ReLU(inplace=True),
        )


def coordinate_maps(x: torch.Tensor) -> torch.Tensor:
    """[B,2,h,w]: x then y running linearly from -1 to 1 across the map (a single row or column sits at -1).

    Built from `arange` over the map's own size so a traced graph follows the input size."""
    b, _, h, w = x.shape
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    xs = xs / xs[-1:].clamp(min=1) * 2 - 1
    ys = ys / ys[-1:].clamp(min=1) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(b, -1, -1, -1)


def _normal_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MaskFeatureHead(nn.Module):
    """P2..P5 -> one [B, out_channels, H/4, W/4] mask feature (the published "unified mask feature").

    Level i runs i conv-GN-ReLU stages, each followed by a bilinear upsampling to the next finer level's size
    (x2 on a padded input; by size rather than by factor so any input size works)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, groups: int, num_levels: int = 4):
        super().__init__()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            first = in_channels + (2 if i == num_levels - 1 else 0)  # the coarsest level also reads coordinates
            stages = [ConvGNReLU(mid_channels if j else first, mid_channels, 3, groups) for j in range(max(i, 1))]
            self.levels.append(nn.ModuleList(stages))
        self.predict = ConvGNReLU(mid_channels, out_channels, 1, groups)
        _normal_init(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        last = len(self.levels) - 1
        out = self.levels[0][0](feats[0])
        for i in range(1, len(self.levels)):
            x = feats[i]
            if i == last:  # positions enter once, at the coarsest level, as published
                x = torch.cat([x, coordinate_maps(x)], dim=1)
            for j, conv in enumerate(self.levels[i]):
                size = feats[i - 1 - j].shape[-2:]
                x = F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
            out = out + x
        return self.predict(out)


class SOLOv2Head(nn.Module):
    """Per level: class logits [B,K,S,S] and dynamic kernels [B,E,S,S] on that level's grid."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int,
        num_grids: list[int],
        kernel_channels: int,
        groups: int,
    ):
        super().__init__()
        self.num_classes, self.num_grids = num_classes, [int(s) for s in num_grids]
        self.kernel_convs = nn.Sequential(
            *(ConvGNReLU(in_channels + 2 if i == 0 else feat_channels, feat_channels, 3, groups)
              for i in range(stacked_convs))
        )  # fmt: skip
        self.cls_convs = nn.Sequential(
            *(ConvGNReLU(in_channels if i == 0 else feat_channels, feat_channels, 3, groups)
              for i in range(stacked_convs))
        )  # fmt: skip
        self.conv_kernel = nn.Conv2d(feat_channels, kernel_channels, 3, padding=1)
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        _normal_init(self)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))  # initial foreground probability 0.01

    @staticmethod
    def level_inputs(feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """P2 halved to P3's size and P6 brought to P5's: the published strides 8, 8, 16, 32, 32."""
        p2, p3, p4, p5, p6 = feats
        down = F.interpolate(p2, size=p3.shape[-2:], mode="bilinear", align_corners=False)
        up = F.interpolate(p6, size=p5.shape[-2:], mode="bilinear", align_corners=False)
        return [down, p3, p4, p5, up]

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_out, kernel_out = [], []
        for x, grid in zip(self.level_inputs(feats), self.num_grids, strict=True):
            x = torch.cat([x, coordinate_maps(x)], dim=1)
            x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
            kernel_out.append(self.conv_kernel(self.kernel_convs(x)))
            cls_out.append(self.conv_cls(self.cls_convs(x[:, :-2])))
        return cls_out, kernel_out
