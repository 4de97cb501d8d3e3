"""PP-YOLOE's efficient task-aligned head (ET-head) with YOLACT-style masks.

Per level, three ESE stems (class, box, mask coefficients) share one global average: each re-weights the level's
map by sigmoid(1x1 conv of the average) and passes it through a 1x1 conv-BN-SiLU. The class and coefficient
stems add the level's map back (a residual); a 3x3 conv then predicts K class logits, 4 x (reg_max + 1) logits
of each side's distance distribution (DFL: the distance in strides is the distribution's mean over 0..reg_max),
and the mask coefficients. The prototypes come from the stride-8 map: 3x3 conv, 2x transposed conv, 3x3 conv,
1x1 conv to ``num_masks`` channels (all conv-BN-SiLU), so they live at stride 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.ppyoloe_seg.layers import ConvBNAct

PROTOTYPE_STRIDE = 4  # the stride-8 map upsampled once


class ESEStem(nn.Module):
    """feat x sigmoid(fc(average)) -> 1x1 conv-BN-SiLU; ``average`` the level's global average, shared."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.conv = ConvBNAct(channels, channels, 1)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feat: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        return self.conv(feat * self.fc(average).sigmoid())


class Prototypes(nn.Sequential):
    """Stride-8 map -> ``num_masks`` prototype maps at stride 4."""

    def __init__(self, cin: int, channels: int, num_masks: int):
        super().__init__(
            ConvBNAct(cin, channels, 3),
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
            ConvBNAct(channels, channels, 3),
            ConvBNAct(channels, num_masks, 1),
        )


class ETHead(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: list[int],
        strides: tuple[int, ...] = (8, 16, 32),
        reg_max: int = 16,
        num_masks: int = 32,
        proto_channels: int = 128,
    ):
        super().__init__()
        self.num_classes, self.strides, self.reg_max = num_classes, tuple(strides), reg_max
        self.stem_cls = nn.ModuleList(ESEStem(c) for c in in_channels)
        self.stem_reg = nn.ModuleList(ESEStem(c) for c in in_channels)
        self.stem_ins = nn.ModuleList(ESEStem(c) for c in in_channels)
        self.pred_cls = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in in_channels)
        self.pred_reg = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), 3, padding=1) for c in in_channels)
        self.pred_ins = nn.ModuleList(nn.Conv2d(c, num_masks, 3, padding=1) for c in in_channels)
        self.prototypes = Prototypes(in_channels[0], proto_channels, num_masks)
        # the distribution's support 0..reg_max: a buffer, not a parameter, so nothing ever trains it
        self.register_buffer("bins", torch.arange(reg_max + 1, dtype=torch.float32), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        prior = -math.log((1 - 0.01) / 0.01)  # initial foreground probability 0.01
        for cls, reg in zip(self.pred_cls, self.pred_reg, strict=True):
            for conv, bias in ((cls, prior), (reg, 1.0)):  # zero weights: uniform distributions, 8 strides a side
                nn.init.zeros_(conv.weight)
                nn.init.constant_(conv.bias, bias)

    def forward(self, feats: list[torch.Tensor], prototypes: bool = True) -> tuple[list, list, list, torch.Tensor]:
        """Per level (finest first): class logits [B,K,h,w], distance-distribution logits [B,4(R+1),h,w], mask
        coefficients [B,M,h,w]; and the prototypes [B,M,H/4,W/4] (None unless ``prototypes``: inference computes
        them only around the kept boxes)."""
        cls_out, reg_out, ins_out = [], [], []
        for i, feat in enumerate(feats):
            average = feat.mean(dim=(2, 3), keepdim=True)
            cls_out.append(self.pred_cls[i](self.stem_cls[i](feat, average) + feat))
            reg_out.append(self.pred_reg[i](self.stem_reg[i](feat, average)))
            ins_out.append(self.pred_ins[i](self.stem_ins[i](feat, average) + feat))
        return cls_out, reg_out, ins_out, self.prototypes(feats[0]) if prototypes else None

    def distances(self, reg_logits: torch.Tensor) -> torch.Tensor:
        """[..., 4(R+1)] distribution logits -> [..., 4] expected (left, top, right, bottom) distances in strides."""
        probs = F.softmax(reg_logits.unflatten(-1, (4, self.reg_max + 1)), dim=-1)
        return probs @ self.bins


def anchor_points(priors: torch.Tensor) -> torch.Tensor:
    """Cell centres [A,2] of points laid at cell corners ([A,3] (x, y, stride), as `make_priors` gives them)."""
    return priors[:, :2] + priors[:, 2:] * 0.5


def crop_to_boxes(masks: torch.Tensor, boxes: torch.Tensor, stride: int, margin: float = 0.0) -> torch.Tensor:
    """Masks [N,h,w] at ``stride`` zeroed where a pixel's centre lies outside its box [N,4] (input pixels), the box
    grown by ``margin`` input pixels each side."""
    h, w = masks.shape[-2:]
    ys = (torch.arange(h, device=masks.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=masks.device, dtype=boxes.dtype) + 0.5) * stride
    x0, y0 = boxes[:, 0:1] - margin, boxes[:, 1:2] - margin
    x1, y1 = boxes[:, 2:3] + margin, boxes[:, 3:4] + margin
    inside_x = (xs[None] >= x0) & (xs[None] < x1)
    inside_y = (ys[None] >= y0) & (ys[None] < y1)
    return masks * (inside_y[:, :, None] & inside_x[:, None, :]).to(masks.dtype)
