"""CSPResNet (PP-YOLOE, Xu et al. 2022, section 2.2): a three-conv stem and four stages, each a stride-2 conv and a
cross-stage-partial layer of RepResBlocks (`instaseg.models.ppyoloe_seg.layers`) joined through effective
squeeze-excitation (ESE). Returns the stride 8, 16 and 32 maps (stages 2, 3 and 4).
"""

from __future__ import annotations

import torch
from torch import nn

from instaseg.models.common.layers import ChannelAttention, StagedBackbone
from instaseg.models.ppyoloe_seg.layers import ConvBNAct, RepResBlock

# published CSPResNet-l before the width/depth multipliers: stem width, then each stage's output width and blocks
STEM_CHANNELS = 64
STAGE_CHANNELS = (128, 256, 512, 1024)
STAGE_BLOCKS = (3, 6, 6, 3)


def scaled_channels(channels: int, widen: float) -> int:
    """Width after the multiplier, rounded as published (Python's round, at least one)."""
    return max(round(channels * widen), 1)


def scaled_depth(blocks: int, deepen: float) -> int:
    """Blocks after the multiplier: 0.33 x 3 = 0.99 -> 1, 0.33 x 6 = 1.98 -> 2 (Python's round, at least one)."""
    return max(round(blocks * deepen), 1)


class CSPResStage(nn.Module):
    """Stride-2 3x3 conv to the mean of the in/out widths, then two 1x1 halves (one through the blocks), joined,
    re-weighted by ESE (a 1x1 conv on the global average with a hard sigmoid) and fused by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, num_blocks: int, use_alpha: bool = True):
        super().__init__()
        mid = (cin + cout) // 2
        self.down = ConvBNAct(cin, mid, 3, stride=2)
        self.short_conv = ConvBNAct(mid, mid // 2, 1)
        self.main_conv = ConvBNAct(mid, mid // 2, 1)
        self.blocks = nn.Sequential(*(RepResBlock(mid // 2, mid // 2, True, use_alpha) for _ in range(num_blocks)))
        self.attention = ChannelAttention(mid)  # ESE: the same squeeze-excitation without reduction as CSPNeXt's
        self.fuse = ConvBNAct(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        joined = torch.cat([self.short_conv(x), self.blocks(self.main_conv(x))], dim=1)
        return self.fuse(self.attention(joined))


class CSPResNet(StagedBackbone):
    def __init__(self, deepen: float = 1.0, widen: float = 1.0, use_alpha: bool = True):
        super().__init__()
        stem = scaled_channels(STEM_CHANNELS, widen)
        self.stem = nn.Sequential(  # the "large stem" of PP-YOLOE+: three 3x3 convs, the first with stride 2
            ConvBNAct(3, stem // 2, 3, stride=2), ConvBNAct(stem // 2, stem // 2, 3), ConvBNAct(stem // 2, stem, 3)
        )
        widths = [stem] + [scaled_channels(c, widen) for c in STAGE_CHANNELS]
        self.stages = nn.ModuleList(
            CSPResStage(widths[i], widths[i + 1], scaled_depth(n, deepen), use_alpha)
            for i, n in enumerate(STAGE_BLOCKS)
        )
        self.out_channels = widths[2:]
