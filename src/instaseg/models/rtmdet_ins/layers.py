"""Building blocks of CSPNeXt and its PAFPN: conv-BN-SiLU, depthwise-separable conv, channel attention, SPPF and
the CSP layer with CSPNeXt blocks (RTMDet, Lyu et al. 2022, section 3.2).

BatchNorm uses the published momentum 0.03 (PyTorch's convention: weight of the new batch) and eps 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn

BN_MOMENTUM = 0.03
BN_EPS = 1e-3


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> SiLU; ``groups=channels`` makes it depthwise."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k x k conv-BN-SiLU then pointwise 1 x 1 conv-BN-SiLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__(ConvBNAct(cin, cin, kernel, groups=cin), ConvBNAct(cin, cout, 1))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation without reduction: global average -> 1x1 conv -> hard sigmoid -> rescale."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(self.pool(x)))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, whose outputs see 5, 9 and 13 pixel windows."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvBNAct(cin, mid, 1)
        self.pool = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)
        self.conv2 = ConvBNAct(mid * 4, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.conv2(torch.cat([x, y1, y2, self.pool(y2)], dim=1))


class CSPNeXtBlock(nn.Module):
    """3x3 conv then a 5x5 depthwise-separable conv, with a residual when shapes allow (the paper's Fig. 3b)."""

    def __init__(self, cin: int, cout: int, expansion: float = 1.0, add_identity: bool = True, kernel: int = 5):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = ConvBNAct(cin, hidden, 3)
        self.conv2 = DepthwiseSeparable(hidden, cout, kernel)
        self.add_identity = add_identity and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: a main path through ``num_blocks`` CSPNeXt blocks and a 1x1 short path, joined,
    optionally channel-attended (backbone), and fused by a 1x1 conv."""

    def __init__(
        self,
        cin: int,
        cout: int,
        num_blocks: int,
        add_identity: bool = True,
        expand_ratio: float = 0.5,
        channel_attention: bool = False,
    ):
        super().__init__()
        mid = int(cout * expand_ratio)
        self.main_conv = ConvBNAct(cin, mid, 1)
        self.short_conv = ConvBNAct(cin, mid, 1)
        self.final_conv = ConvBNAct(2 * mid, cout, 1)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, mid, 1.0, add_identity) for _ in range(num_blocks)))
        self.attention = ChannelAttention(2 * mid) if channel_attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        return self.final_conv(self.attention(joined))
