"""CSPNeXt-PAFPN: a top-down path (1x1 reduce, 2x nearest upsample, concat, CSP layer) then a bottom-up path
(stride-2 3x3 conv, concat, CSP layer), and a 3x3 output conv per level to the common width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.rtmdet_ins.layers import ConvBNAct, CSPLayer


class CSPNeXtPAFPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int, num_blocks: int, expand_ratio: float = 0.5):
        super().__init__()
        ch = list(in_channels)
        n = len(ch)
        self.reduce = nn.ModuleList(ConvBNAct(ch[i], ch[i - 1], 1) for i in range(n - 1, 0, -1))
        self.top_down = nn.ModuleList(
            CSPLayer(ch[i - 1] * 2, ch[i - 1], num_blocks, False, expand_ratio) for i in range(n - 1, 0, -1)
        )
        self.downsample = nn.ModuleList(ConvBNAct(ch[i], ch[i], 3, stride=2) for i in range(n - 1))
        self.bottom_up = nn.ModuleList(
            CSPLayer(ch[i] * 2, ch[i + 1], num_blocks, False, expand_ratio) for i in range(n - 1)
        )
        self.out_convs = nn.ModuleList(ConvBNAct(c, out_channels, 3) for c in ch)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        inner = [feats[-1]]
        for j, i in enumerate(range(n - 1, 0, -1)):
            high = self.reduce[j](inner[0])
            inner[0] = high  # the reduced map is what the bottom-up path meets again
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.top_down[j](torch.cat([up, feats[i - 1]], dim=1)))
        outs = [inner[0]]
        for i in range(n - 1):
            down = self.downsample[i](outs[-1])
            outs.append(self.bottom_up[i](torch.cat([down, inner[i + 1]], dim=1)))
        return [conv(x) for conv, x in zip(self.out_convs, outs, strict=True)]
