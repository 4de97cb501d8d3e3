"""CSPResNet (PP-YOLOE, Xu et al. 2022, section 2.2): a three-conv stem and four stages, each a stride-2 conv and a
cross-stage-partial layer of RepResBlocks joined through effective squeeze-excitation (ESE).

A RepResBlock is a 3x3 conv-BN-SiLU then a RepVGG unit (3x3 conv-BN plus alpha x 1x1 conv-BN, then SiLU) with a
residual. Training keeps both RepVGG branches; they could be fused into one 3x3 conv for deployment, which changes
no output. Returns the stride 8, 16 and 32 maps (stages 2, 3 and 4).
"""

from __future__ import annotations

import torch
from torch import nn

from instaseg.models.rtmdet_ins.layers import ChannelAttention, ConvBNAct

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


class RepVGGUnit(nn.Module):
    """SiLU(BN(conv3x3(x)) + alpha x BN(conv1x1(x))); ``alpha`` a learned scalar when ``use_alpha`` (PP-YOLOE+)."""

    def __init__(self, channels: int, use_alpha: bool = False):
        super().__init__()
        self.conv3 = ConvBNAct(channels, channels, 3, act=False)
        self.conv1 = ConvBNAct(channels, channels, 1, act=False)
        self.alpha = nn.Parameter(torch.ones(())) if use_alpha else None
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.conv1(x)
        return self.act(self.conv3(x) + (self.alpha * side if self.alpha is not None else side))


class RepResBlock(nn.Module):
    """3x3 conv-BN-SiLU then a RepVGG unit, with a residual when ``shortcut`` (the backbone's; the neck has none)."""

    def __init__(self, cin: int, cout: int, shortcut: bool = True, use_alpha: bool = False):
        super().__init__()
        self.conv = ConvBNAct(cin, cout, 3)
        self.rep = RepVGGUnit(cout, use_alpha)
        self.shortcut = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rep(self.conv(x))
        return x + y if self.shortcut else y


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


class CSPResNet(nn.Module):
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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        return outs
