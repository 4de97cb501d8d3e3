"""CustomCSPPAN (PP-YOLOE's neck): a top-down path then a bottom-up path of CSP stages of RepResBlocks without
residuals, and SPP (5, 9, 13 max-pools) inside the deepest top-down stage.

Top-down: the stride-32 map goes through its stage; the result is halved in width by a 1x1 conv, upsampled 2x
(nearest) and joined to the next finer backbone map for that level's stage. Bottom-up: a stride-2 3x3 conv of the
finer output joined to the coarser top-down output, through a stage. Outputs keep each level's own width (no
common width as in an FPN): [w8, w16, w32] at strides 8, 16, 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.ppyoloe_seg.layers import ConvBNAct, RepResBlock


class SPP(nn.Module):
    """[x, maxpool5(x), maxpool9(x), maxpool13(x)] fused by a 1x1 conv. The pools run chained (5, 5 of 5, ...),
    which gives exactly the 5/9/13 windows (max over a max) at a third of the cost."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)
        self.fuse = ConvBNAct(4 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p5 = self.pool(x)
        p9 = self.pool(p5)
        return self.fuse(torch.cat([x, p5, p9, self.pool(p9)], dim=1))


class CSPStage(nn.Module):
    """Two 1x1 halves, one through ``num_blocks`` RepResBlocks (SPP after the middle one when ``spp``), joined and
    fused by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, num_blocks: int, spp: bool = False):
        super().__init__()
        mid = cout // 2
        self.short_conv = ConvBNAct(cin, mid, 1)
        self.main_conv = ConvBNAct(cin, mid, 1)
        blocks: list[nn.Module] = []
        for i in range(num_blocks):
            blocks.append(RepResBlock(mid, mid, shortcut=False))
            if spp and i == (num_blocks - 1) // 2:
                blocks.append(SPP(mid))
        self.blocks = nn.Sequential(*blocks)
        self.fuse = ConvBNAct(2 * mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.short_conv(x), self.blocks(self.main_conv(x))], dim=1))


class CustomCSPPAN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: list[int], num_blocks: int, spp: bool = True):
        """``in_channels`` and ``out_channels`` finest level first (strides 8, 16, 32)."""
        super().__init__()
        ins, outs = list(in_channels)[::-1], list(out_channels)[::-1]  # coarsest first, as the top-down path runs
        n = len(ins)
        self.top_down = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for i in range(n):
            cin = ins[i] + (outs[i - 1] // 2 if i else 0)
            self.top_down.append(CSPStage(cin, outs[i], num_blocks, spp=spp and i == 0))
            if i < n - 1:
                self.lateral.append(ConvBNAct(outs[i], outs[i] // 2, 1))
        fine_first = list(out_channels)
        self.downsample = nn.ModuleList(ConvBNAct(fine_first[i], fine_first[i], 3, stride=2) for i in range(n - 1))
        self.bottom_up = nn.ModuleList(
            CSPStage(fine_first[i] + fine_first[i + 1], fine_first[i + 1], num_blocks) for i in range(n - 1)
        )
        self.out_channels = fine_first

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        coarse_first = feats[::-1]
        top_down = []
        route = None
        for i, feat in enumerate(coarse_first):
            x = feat if route is None else torch.cat([route, feat], dim=1)
            x = self.top_down[i](x)
            top_down.append(x)
            if i < len(self.lateral):
                route = F.interpolate(self.lateral[i](x), scale_factor=2.0, mode="nearest")
        fine_first = top_down[::-1]
        outs = [fine_first[0]]
        for i in range(len(self.bottom_up)):
            down = self.downsample[i](outs[-1])
            outs.append(self.bottom_up[i](torch.cat([down, fine_first[i + 1]], dim=1)))
        return outs
