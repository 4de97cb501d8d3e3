"""Building blocks of CSPNeXt and its PAFPN: conv-BN-SiLU, depthwise-separable conv, SPPF and the CSP layer with
CSPNeXt blocks and channel attention (RTMDet, Lyu et al. 2022, section 3.2).

BatchNorm is PyTorch's default (eps 1e-5, momentum 0.1), as MMDetection's published RTMDet-Ins configs build every
norm of the network: they set ``norm_cfg=dict(type='SyncBN')``, which replaces CSPNeXt's own default (momentum 0.03,
eps 1e-3, what mmyolo uses). The eps matters at inference: the published running variances were estimated with
eps 1e-5 (with 1e-3, the converted weights moved the stride-32 features by 57% of their scale).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from instaseg.models.common.layers import ChannelAttention, ConvNormAct

# conv-BN-SiLU (act=False: no activation) with the published BatchNorm
ConvBNAct = partial(ConvNormAct, norm=partial(nn.BatchNorm2d, eps=1e-5, momentum=0.1))


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k x k conv-BN-SiLU then pointwise 1 x 1 conv-BN-SiLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__(ConvBNAct(cin, cin, kernel, groups=cin), ConvBNAct(cin, cout, 1))


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
