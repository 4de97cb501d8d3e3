"""Convolution blocks that several architectures are built of."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from instaseg.models.common.backbones import freeze_stages


class ConvNormAct(nn.Sequential):
    """Conv (no bias: the norm re-centres) -> norm -> activation; ``groups=channels`` makes it depthwise.

    ``norm`` builds the normalisation from the channel count, so each architecture binds its published BatchNorm
    settings once (``partial(ConvNormAct, norm=partial(nn.BatchNorm2d, eps=..., momentum=...))``). ``act``: True for
    SiLU, False for none, or a factory of another activation. State-dict names are ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool | Callable[[], nn.Module] = True,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = norm(cout)
        if act is True:
            self.act = nn.SiLU(inplace=True)
        else:
            self.act = act() if act else nn.Identity()


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation without reduction: global average -> 1x1 conv -> hard sigmoid -> rescale
    (CSPNeXt's channel attention; PP-YOLOE's effective SE, "ESE")."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(self.pool(x)))


class StagedBackbone(nn.Module):
    """A stem then a list of stages (``self.stem``, ``self.stages``, set by the subclass); the forward returns the
    outputs of the stages from ``first_output`` on, finest first."""

    stem: nn.Module
    stages: nn.ModuleList
    first_output: int = 1  # stage 0 (stride 4) feeds the next stage only

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first_output:
                outs.append(x)
        return outs

    def freeze(self, frozen_stages: int) -> None:
        """Stop gradients in the stem and the first ``frozen_stages`` stages (pretrained starts)."""
        freeze_stages(self, [f"stages.{i}" for i in range(len(self.stages))], frozen_stages)
