"""The Mask-RT-DETR decoder: IoU-aware query selection from the encoder's tokens, mask-enhanced initial boxes,
then layers of self-attention, deformable cross-attention and a feed-forward, each refining the boxes; class
logits, boxes and masks (query embedding . per-pixel prototypes) come out of heads shared by every layer.

Boxes are (cx, cy, w, h) normalised to the padded input, masks cover the padded input at stride 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from instaseg.models.mask_rtdetr.attention import MSDeformableAttention, MultiHeadAttention
from instaseg.models.mask_rtdetr.denoising import DenoisingGroup, inverse_sigmoid


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, layers: int):
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, levels: int, points: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads)
        self.cross_attn = MSDeformableAttention(dim, heads, levels, points)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, x, reference, memory, pos, blocked=None) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x, blocked))
        x = self.norm2(x + self.cross_attn(x + pos, reference, memory))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


@dataclass
class Predictions:
    """One prediction set: logits [B,Q,K], boxes [B,Q,4] (cx, cy, w, h in [0, 1]), mask logits [B,Q,H/4,W/4]."""

    logits: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor

    def split(self, n: int) -> tuple[Predictions, Predictions]:
        """(the first n queries, the rest): denoising queries come first."""
        head = Predictions(self.logits[:, :n], self.boxes[:, :n], self.masks[:, :n])
        return head, Predictions(self.logits[:, n:], self.boxes[:, n:], self.masks[:, n:])


def make_anchors(shapes: list[tuple[int, int]], device: torch.device, eps: float = 0.01, size: float = 0.05):
    """(anchors before the sigmoid [1,A,4], valid [1,A,1]): one per token, centred on its cell, 0.05 x 2^level
    wide; those too close to the border are invalid and +inf (as published: a selected border token's encoder
    box is then (1, 1, 1, 1), which the encoder's set loss sees, and takes no gradient)."""
    anchors = []
    for level, (h, w) in enumerate(shapes):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        xy = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
        anchors.append(torch.cat([xy, torch.full_like(xy, size * 2.0**level)], dim=-1))
    anchors = torch.cat(anchors)[None]
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    logits = torch.log(anchors / (1 - anchors))
    return torch.where(valid, logits, torch.full_like(logits, float("inf"))), valid


def masks_to_boxes_normalised(masks: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """[B,Q,h,w] bool, or logits with the ``threshold`` their pixels must exceed -> [B,Q,4] (cx, cy, w, h) / map
    size of each mask's extent; all zero for an empty mask. From logits, a column holds a pixel of the mask when
    its highest logit exceeds the threshold: the same boxes without a boolean copy of every mask."""
    h, w = masks.shape[-2:]
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    if threshold is None:
        m = masks.to(torch.float32)
        cols, rows = m.amax(dim=-2), m.amax(dim=-1)  # [B,Q,w], [B,Q,h]
    else:
        cols = (masks.amax(dim=-2) > threshold).to(torch.float32)
        rows = (masks.amax(dim=-1) > threshold).to(torch.float32)
    big = 1e8
    x1 = (xs * cols).amax(-1) + 1
    y1 = (ys * rows).amax(-1) + 1
    x0 = torch.where(cols > 0, xs, big).amin(-1)
    y0 = torch.where(rows > 0, ys, big).amin(-1)
    box = torch.stack([x0, y0, x1, y1], dim=-1) * (cols.amax(-1, keepdim=True) > 0).to(torch.float32)
    box = box / torch.stack([xs[-1] + 1, ys[-1] + 1]).repeat(2)  # from the ranges: stays dynamic in a trace
    return torch.cat([(box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]], dim=-1)


def mask_logits(embed: torch.Tensor, mask_feat: torch.Tensor) -> torch.Tensor:
    """[..., Q, P] prototype coefficients . [..., P, h, w] per-pixel prototypes -> mask logits [..., Q, h, w]."""
    h, w = mask_feat.shape[-2:]
    n = mask_feat.dim()
    # [..., h*w, P] by a permute (see `select_queries`), the matrix product reading it transposed
    pixels = mask_feat.permute(*range(n - 3), n - 2, n - 1, n - 3).flatten(-3, -2)
    return (embed @ pixels.transpose(-1, -2)).unflatten(-1, (h, w))


class MaskTransformer(nn.Module):
    """Fused levels and prototypes -> per-layer predictions (training) or the last layer's (inference).
    ``in_dim``: the encoder's width, projected to the decoder's ``dim`` per level."""

    def __init__(self, num_classes: int, in_dim: int, dim: int, levels: int, num_queries: int, layers: int,
                 heads: int, ffn: int, points: int, prototypes: int, mask_enhanced: bool = True):  # fmt: skip
        super().__init__()
        self.num_queries, self.mask_enhanced = num_queries, mask_enhanced
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_dim, dim, 1, bias=False), nn.BatchNorm2d(dim)) for _ in range(levels)
        )
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn, levels, points) for _ in range(layers))
        self.denoising_class_embed = nn.Embedding(num_classes, dim)
        self.query_pos_head = MLP(4, 2 * dim, dim, 2)
        self.mask_query_head = MLP(dim, dim, prototypes, 3)
        self.enc_output = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.dec_norm = nn.LayerNorm(dim)
        self.score_head = nn.Linear(dim, num_classes)
        self.bbox_head = MLP(dim, dim, 4, 3)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.score_head.bias, -4.595)  # prior probability 0.01 (focal-loss practice)
        nn.init.zeros_(self.bbox_head.layers[-1].weight)
        nn.init.zeros_(self.bbox_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for lin in self.query_pos_head.layers:
            nn.init.xavier_uniform_(lin.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)

    def predict(self, x: torch.Tensor, mask_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, mask logits) of query embeddings: the shared heads after the decoder norm."""
        x = self.dec_norm(x)
        return self.score_head(x), mask_logits(self.mask_query_head(x), mask_feat)

    def select_queries(self, memory: list[torch.Tensor], mask_feat: torch.Tensor):
        """IoU-aware query selection: the ``num_queries`` tokens of best class score become the content queries,
        their predicted boxes (or, mask-enhanced, the boxes of their masks) the initial references."""
        shapes = [tuple(m.shape[-2:]) for m in memory]
        # channels moved last by a permute, not flatten + transpose: OpenVINO's convolutions already write channels
        # last, and it drops a permute to that layout where a reshape of the map needed a reorder
        tokens = torch.cat([m.permute(0, 2, 3, 1).flatten(1, 2) for m in memory], dim=1)
        anchors, valid = make_anchors(shapes, tokens.device)
        tokens = self.enc_output(torch.where(valid, tokens, torch.zeros_like(tokens)))
        enc_logits = self.score_head(tokens)
        enc_boxes_unact = self.bbox_head(tokens) + anchors
        k = min(self.num_queries, tokens.shape[1])  # tiny inputs can have fewer tokens than queries
        top = enc_logits.max(-1).values.topk(k, dim=1).indices  # [B,k]
        content = tokens.gather(1, top[..., None].expand(-1, -1, tokens.shape[-1]))
        ref_unact = enc_boxes_unact.gather(1, top[..., None].expand(-1, -1, 4))
        logits, masks = self.predict(content, mask_feat)
        encoder_out = Predictions(logits, ref_unact.sigmoid(), masks)
        if self.mask_enhanced:
            ref_unact = inverse_sigmoid(masks_to_boxes_normalised(masks, threshold=0.0))
        return content.detach(), ref_unact, encoder_out

    def forward(self, feats: list[torch.Tensor], mask_feat: torch.Tensor, dn: DenoisingGroup | None = None):
        """(per-layer Predictions, the encoder's Predictions, the initial ones). In eval mode the list holds
        only the last layer's; with ``dn`` the denoising queries come first in every set."""
        memory = [proj(f) for proj, f in zip(self.input_proj, feats, strict=True)]
        content, ref_unact, encoder_out = self.select_queries(memory, mask_feat)
        blocked = None
        if dn is not None:
            content = torch.cat([dn.content, content], dim=1)
            ref_unact = torch.cat([dn.boxes_unact, ref_unact], dim=1)
            blocked = dn.blocked
        initial = None
        if self.training:
            logits, masks = self.predict(content, mask_feat)
            initial = Predictions(logits, ref_unact.sigmoid(), masks)
        return self._decode(content, ref_unact.detach(), memory, mask_feat, blocked), encoder_out, initial

    def _decode(self, x, ref_unact, memory, mask_feat, blocked) -> list[Predictions]:
        outputs = []
        ref = ref_unact.sigmoid()
        prev_unrefined = ref  # the reference the previous layer refined, kept with its gradient
        for i, layer in enumerate(self.layers):
            x = layer(x, ref, memory, self.query_pos_head(ref), blocked)
            delta = self.bbox_head(x)
            refined = (delta + inverse_sigmoid(ref)).sigmoid()
            last = i == len(self.layers) - 1
            if self.training or last:
                logits, masks = self.predict(x, mask_feat)
                # training: each layer's boxes refine the previous layer's undetached boxes (RT-DETR), so a
                # layer's box loss also reaches the one before; the next layer still starts from a detached copy
                boxes = refined
                if self.training and i > 0:
                    boxes = (delta + inverse_sigmoid(prev_unrefined)).sigmoid()
                outputs.append(Predictions(logits, boxes, masks))
            prev_unrefined = refined
            ref = refined.detach() if self.training else refined
        return outputs
