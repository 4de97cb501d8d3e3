"""The mask hybrid encoder: attention within one level (intra-scale interaction), CNN fusion across the levels
(a top-down FPN then a bottom-up PAN of CSP blocks with RepVGG convolutions), and the mask branch that turns the
fused levels plus the backbone's stride-4 map into the per-pixel prototype embedding the queries are dotted with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.common.layers import ConvNormAct
from instaseg.models.mask_rtdetr.attention import MultiHeadAttention


class RepVggBlock(nn.Module):
    """3x3 and 1x1 branches summed (the training-time form; both are kept so the weights stay as trained)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, act=False)
        self.conv2 = ConvNormAct(channels, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, expansion: float):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = ConvNormAct(cin, hidden)
        self.conv2 = ConvNormAct(cin, hidden)
        self.bottlenecks = nn.Sequential(*(RepVggBlock(hidden) for _ in range(blocks)))
        self.conv3 = ConvNormAct(hidden, cout) if hidden != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer with a GELU feed-forward."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


def sincos_position_embedding(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[1, h*w, dim] fixed 2-D sine-cosine embedding, row-major like a flattened feature map: [sin, cos] of the
    row, then [sin, cos] of the column.

    Row first is what the published weights learned: PaddleDetection builds the embedding from
    ``meshgrid(arange(w), arange(h))`` flattened, which on the square maps it trains and evaluates on (640 x 640
    stretched inputs) puts the row index in the first half. On non-square maps its flattening no longer follows
    the feature map's order; ours keeps the geometry (row, column) there and is identical on square maps."""
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_row = gy.reshape(-1, 1) * omega[None]
    out_col = gx.reshape(-1, 1) * omega[None]
    return torch.cat([out_row.sin(), out_row.cos(), out_col.sin(), out_col.cos()], dim=1)[None]


class MaskFeatFPN(nn.Module):
    """Fuses the encoder's levels (strides 8, 16, 32) at stride 8: each level convolved and upsampled 2x per
    octave, the maps summed, one output conv."""

    def __init__(self, cin: int, levels: int, feat: int, cout: int):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for i in range(levels):
            layers: list[nn.Module] = []
            for k in range(max(1, i)):
                layers.append(ConvNormAct(cin if k == 0 else feat, feat, 3))
                if i > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.output_conv = ConvNormAct(feat, cout, 3)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](feats[0])
        for head, feat in zip(self.scale_heads[1:], feats[1:], strict=True):
            out = out + F.interpolate(head(feat), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.output_conv(out)


class MaskHybridEncoder(nn.Module):
    """Backbone levels (strides 4, 8, 16, 32) -> (three fused levels [B,D,h,w] at strides 8..32, the prototype
    map [B,P,H/4,W/4])."""

    def __init__(self, in_channels: list[int], dim: int, encoder_level: int, encoder_layers: int, heads: int,
                 ffn: int, expansion: float, csp_blocks: int, mask_feat: tuple[int, int], prototypes: int):  # fmt: skip
        super().__init__()
        x4_channels, *channels = in_channels
        self.dim, self.encoder_level = dim, encoder_level
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.BatchNorm2d(dim)) for c in channels
        )
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, ffn) for _ in range(encoder_layers))
        n = len(channels)
        self.lateral_convs = nn.ModuleList(ConvNormAct(dim, dim) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, csp_blocks, expansion) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvNormAct(dim, dim, 3, 2) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(CSPRepLayer(2 * dim, dim, csp_blocks, expansion) for _ in range(n - 1))
        self.mask_feat_head = MaskFeatFPN(dim, n, mask_feat[0], mask_feat[1])
        self.enc_mask_lateral = ConvNormAct(x4_channels, mask_feat[1], 3)
        self.enc_mask_output = nn.Sequential(
            ConvNormAct(mask_feat[1], mask_feat[1], 3), nn.Conv2d(mask_feat[1], prototypes, 1)
        )

    def _intra_scale(self, feat: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        x = feat.flatten(2).transpose(1, 2)
        pos = sincos_position_embedding(h, w, self.dim).to(feat)
        for layer in self.encoder:
            x = layer(x, pos)
        return x.transpose(1, 2).reshape(b, c, h, w)

    def _cross_scale(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        inner = [feats[-1]]
        for i in range(len(feats) - 1):  # top-down
            top = self.lateral_convs[i](inner[0])
            inner[0] = top
            up = F.interpolate(top, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, feats[-2 - i]], dim=1)))
        outs = [inner[0]]
        for i in range(len(feats) - 1):  # bottom-up
            down = self.downsample_convs[i](outs[-1])
            outs.append(self.pan_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return outs

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        x4, *rest = feats
        proj = [p(f) for p, f in zip(self.input_proj, rest, strict=True)]
        if len(self.encoder):
            proj[self.encoder_level] = self._intra_scale(proj[self.encoder_level])
        fused = self._cross_scale(proj)
        mask_feat = F.interpolate(self.mask_feat_head(fused), scale_factor=2.0, mode="bilinear", align_corners=False)
        mask_feat = mask_feat + self.enc_mask_lateral(x4)
        return fused, self.enc_mask_output(mask_feat)
