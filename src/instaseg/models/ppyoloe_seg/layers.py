"""PP-YOLOE's building blocks: conv-BN-SiLU, the RepVGG unit and the residual block of CSPResNet and its neck.

A RepResBlock is a 3x3 conv-BN-SiLU then a RepVGG unit (3x3 conv-BN plus alpha x 1x1 conv-BN, then SiLU) with a
residual. Training keeps both RepVGG branches; they could be fused into one 3x3 conv for deployment, which changes
no output.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from instaseg.models.common.layers import ConvNormAct

# conv-BN-SiLU (act=False: no activation) with PaddleDetection's BatchNorm2D defaults: eps 1e-5 and momentum 0.9
# in Paddle's convention (the weight of the running statistics), 0.1 in PyTorch's (the weight of the new batch).
# The published weights' running statistics were accumulated, and are applied, with these.
ConvBNAct = partial(ConvNormAct, norm=partial(nn.BatchNorm2d, eps=1e-5, momentum=0.1))


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
