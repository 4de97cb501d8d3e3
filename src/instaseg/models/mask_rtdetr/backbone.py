"""PP-HGNetV2, the backbone of the published Mask-RT-DETR sizes: a stem with a pooled/convolved split, then four
stages of HG blocks (a chain of convolutions whose outputs are all concatenated and squeezed by 1x1 convs).
Four levels come out, at strides 4, 8, 16 and 32 (the stride-4 one feeds the mask prototypes).

``ARCHS`` holds the published stage tables (S, M, L, X, H as the detection configs name them) and ``nano``, a
narrow table of our own for CPU budgets (no published counterpart).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

# per stage: in, mid, out channels, blocks, downsample, light block, kernel size, layers per block
StageSpec = tuple[int, int, int, int, bool, bool, int, int]
ARCHS: dict[str, tuple[tuple[int, int, int], tuple[StageSpec, ...]]] = {
    "nano": ((3, 16, 16), (
        (16, 16, 32, 1, False, False, 3, 2),
        (32, 24, 64, 1, True, False, 3, 2),
        (64, 48, 128, 1, True, True, 5, 2),
        (128, 64, 256, 1, True, True, 5, 2),
    )),
    "S": ((3, 24, 32), (
        (32, 32, 64, 1, False, False, 3, 3),
        (64, 48, 256, 1, True, False, 3, 3),
        (256, 96, 512, 2, True, True, 5, 3),
        (512, 192, 1024, 1, True, True, 5, 3),
    )),
    "M": ((3, 24, 32), (
        (32, 32, 96, 1, False, False, 3, 4),
        (96, 64, 384, 1, True, False, 3, 4),
        (384, 128, 768, 3, True, True, 5, 4),
        (768, 256, 1536, 1, True, True, 5, 4),
    )),
    "L": ((3, 32, 48), (
        (48, 48, 128, 1, False, False, 3, 6),
        (128, 96, 512, 1, True, False, 3, 6),
        (512, 192, 1024, 3, True, True, 5, 6),
        (1024, 384, 2048, 1, True, True, 5, 6),
    )),
    "X": ((3, 32, 64), (
        (64, 64, 128, 1, False, False, 3, 6),
        (128, 128, 512, 2, True, False, 3, 6),
        (512, 256, 1024, 5, True, True, 5, 6),
        (1024, 512, 2048, 2, True, True, 5, 6),
    )),
    "H": ((3, 48, 96), (
        (96, 96, 192, 2, False, False, 3, 6),
        (192, 192, 512, 3, True, False, 3, 6),
        (512, 384, 1024, 6, True, True, 5, 6),
        (1024, 768, 2048, 3, True, True, 5, 6),
    )),
}  # fmt: skip


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True,
                 norm: type[nn.Module] = nn.BatchNorm2d, same_pad: bool = False):  # fmt: skip
        super().__init__()
        # "same" padding of an even kernel goes right/bottom (TF convention, as the published 2x2 stem convs)
        self.same_pad = same_pad
        self.conv = nn.Conv2d(cin, cout, k, stride, 0 if same_pad else (k - 1) // 2, groups=groups, bias=False)
        self.bn = norm(cout)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.act(self.bn(self.conv(x)))


class LightConvBNAct(nn.Module):
    """1x1 projection then a depthwise k x k convolution."""

    def __init__(self, cin: int, cout: int, k: int, norm: type[nn.Module]):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 1, act=False, norm=norm)
        self.conv2 = ConvBNAct(cout, cout, k, groups=cout, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, norm: type[nn.Module]):
        super().__init__()
        self.stem1 = ConvBNAct(cin, mid, 3, 2, norm=norm)
        self.stem2a = ConvBNAct(mid, mid // 2, 2, norm=norm, same_pad=True)
        self.stem2b = ConvBNAct(mid // 2, mid, 2, norm=norm, same_pad=True)
        self.stem3 = ConvBNAct(mid * 2, mid, 3, 2, norm=norm)
        self.stem4 = ConvBNAct(mid, cout, 1, norm=norm)
        self.pool = nn.MaxPool2d(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        pooled = self.pool(F.pad(x, (0, 1, 0, 1)))
        x = torch.cat([pooled, self.stem2b(self.stem2a(x))], dim=1)
        return self.stem4(self.stem3(x))


class HGBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, layers: int, identity: bool, light: bool,
                 norm: type[nn.Module]):  # fmt: skip
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList(
            LightConvBNAct(cin if i == 0 else mid, mid, k, norm) if light
            else ConvBNAct(cin if i == 0 else mid, mid, k, norm=norm)
            for i in range(layers)
        )  # fmt: skip
        self.aggregation_squeeze_conv = ConvBNAct(cin + layers * mid, cout // 2, 1, norm=norm)
        self.aggregation_excitation_conv = ConvBNAct(cout // 2, cout, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


class HGStage(nn.Module):
    def __init__(self, spec: StageSpec, norm: type[nn.Module]):
        super().__init__()
        cin, mid, cout, blocks, downsample, light, k, layers = spec
        self.downsample = ConvBNAct(cin, cin, 3, 2, groups=cin, act=False, norm=norm) if downsample else None
        self.blocks = nn.Sequential(
            *(HGBlock(cin if i == 0 else cout, mid, cout, k, layers, i > 0, light, norm) for i in range(blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x) if self.downsample is not None else x)


class HGNetV2(nn.Module):
    """Feature maps at strides 4, 8, 16, 32 (``out_channels`` each). ``frozen_norm``: BatchNorm with fixed
    statistics and affine terms, as the published recipes train from ImageNet weights."""

    def __init__(self, arch: str, frozen_norm: bool = False):
        super().__init__()
        stem, stages = ARCHS[arch]
        norm = FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d
        self.stem = StemBlock(*stem, norm=norm)
        self.stages = nn.ModuleList(HGStage(spec, norm) for spec in stages)
        self.out_channels = [spec[2] for spec in stages]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def freeze_stem(self) -> None:
        """The published recipes keep the stem's pretrained weights fixed (``freeze_stem_only``)."""
        for p in self.stem.parameters():
            p.requires_grad_(False)
