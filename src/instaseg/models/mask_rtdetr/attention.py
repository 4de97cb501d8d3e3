"""Attention of the encoder and decoder: plain multi-head attention, and multi-scale deformable attention (Zhu et
al., Deformable DETR, 2021): each query reads a few bilinear samples per head and level around its reference box,
weighted by a softmax it predicts itself.

Sampling is `torch.nn.functional.grid_sample` (ONNX GridSample, opset 16+; OpenVINO GridSample), one call per
level, so the exported graph runs the eager code and no custom kernel is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Plain scaled dot-product attention written with matmuls (traces to ONNX the same in every torch mode).
    ``blocked`` [Lq, Lk] is True where a query may not look."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor | None = None):
        b, n, c = q.shape
        qh, kh, vh = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        scores = qh @ kh.transpose(-2, -1) / math.sqrt(c // self.heads)
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


def deformable_sampling(
    values: list[torch.Tensor],  # per level [B*heads, head_dim, h, w]
    locations: torch.Tensor,  # [B, Q, heads, levels, points, 2] in [0, 1] of each level's map (x, y)
    weights: torch.Tensor,  # [B, Q, heads, levels, points], summing to 1 over levels x points
) -> torch.Tensor:
    """[B, Q, heads*head_dim]: the weighted sum of the values sampled at the locations (zeros outside a map)."""
    b, q, heads, levels, points, _ = locations.shape
    grids = (2 * locations - 1).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)  # [B*heads, Q, levels, points, 2]
    # the levels stacked outermost: each level's samples are one contiguous block, which OpenVINO stacks without
    # copying; stacked innermost (next to the points) they took a reference concatenation per layer, 0.1 ms at 256 px
    sampled = torch.stack(
        [
            F.grid_sample(value, grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False)
            for level, value in enumerate(values)
        ]
    )  # [levels, B*heads, head_dim, Q, points]
    w = weights.permute(3, 0, 2, 1, 4).reshape(levels, b * heads, 1, q, points)
    out = (sampled * w).sum((0, 4))  # [B*heads, head_dim, Q]
    return out.reshape(b, heads * out.shape[1], q).transpose(1, 2)


class MSDeformableAttention(nn.Module):
    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # offsets start on a star around the reference: one direction per head, farther for later points
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32).reshape(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, memory: list[torch.Tensor]) -> torch.Tensor:
        """``query`` [B,Q,D]; ``reference`` [B,Q,4] boxes (cx, cy, w, h) in [0, 1]; ``memory`` per level
        [B,D,h,w]. The offsets are in units of the reference box (half its size over ``points``)."""
        b, q, _ = query.shape
        heads = self.heads
        # the value projection is a linear layer on each level's tokens, channels moved last by a permute (free in
        # OpenVINO, whose convolutions write channels last), then one explicit transpose to the planar maps
        # GridSample reads. As a 1x1 convolution, OpenVINO converted its channels-last output by a reorder 4x as slow
        # on the 32x32 level (0.2 ms a layer at 256 px, f32 and INT8 alike)
        values = []
        for level in memory:
            _, d, h, w = level.shape
            v = self.value_proj(level.permute(0, 2, 3, 1).flatten(1, 2))  # [B, h*w, D]
            values.append(v.transpose(1, 2).reshape(b * heads, d // heads, h, w))
        offsets = self.sampling_offsets(query).reshape(b, q, heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).reshape(b, q, heads, self.levels * self.points).softmax(-1)
        weights = weights.reshape(b, q, heads, self.levels, self.points)
        ref = reference[:, :, None, None, None, :]
        locations = ref[..., :2] + offsets / self.points * ref[..., 2:] * 0.5
        return self.output_proj(deformable_sampling(values, locations, weights))
