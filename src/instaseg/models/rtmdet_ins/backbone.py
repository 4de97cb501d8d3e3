"""CSPNeXt backbone (RTMDet's P5 architecture): a three-conv stem and four stages, each a stride-2 conv and a
CSP layer of CSPNeXt blocks (the last stage with SPPF first); depth and width scale with the model size.

Returns the stride 8, 16 and 32 maps (stages 2, 3 and 4).
"""

from __future__ import annotations

from torch import nn

from instaseg.models.common.layers import StagedBackbone
from instaseg.models.rtmdet_ins.layers import SPPF, ConvBNAct, CSPLayer

# (in_channels, out_channels, blocks, add_identity, use_spp) per stage before the width/depth multipliers
P5_STAGES = (
    (64, 128, 3, True, False),
    (128, 256, 6, True, False),
    (256, 512, 6, True, False),
    (512, 1024, 3, False, True),
)


def scaled_blocks(n: int, deepen: float) -> int:
    """Blocks after the depth multiplier: round half up (0.167 x 3 = 0.501 -> 1), at least one."""
    return max(int(n * deepen + 0.5), 1)


class CSPNeXt(StagedBackbone):
    def __init__(self, deepen: float = 1.0, widen: float = 1.0, expand_ratio: float = 0.5):
        super().__init__()
        stem = int(P5_STAGES[0][0] * widen)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem // 2, 3, stride=2), ConvBNAct(stem // 2, stem // 2, 3), ConvBNAct(stem // 2, stem, 3)
        )
        self.stages = nn.ModuleList()
        for cin, cout, blocks, identity, spp in P5_STAGES:
            cin, cout = int(cin * widen), int(cout * widen)
            layers: list[nn.Module] = [ConvBNAct(cin, cout, 3, stride=2)]
            if spp:
                layers.append(SPPF(cout, cout))
            layers.append(CSPLayer(cout, cout, scaled_blocks(blocks, deepen), identity, expand_ratio, True))
            self.stages.append(nn.Sequential(*layers))
        self.out_channels = [int(s[1] * widen) for s in P5_STAGES[1:]]
