"""Inference of RTMDet-Ins: scores -> top candidates -> class-aware NMS -> dynamic masks; and the mask paste.

Written once for eager and exported graphs: every step is a tensor op that ONNX expresses (TopK, NonZero via
boolean indexing, NonMaxSuppression, MatMul), so the exported model and the eager one run the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import nms

from instaseg.models.rtmdet_ins.head import dynamic_mask_logits


def make_priors(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """[A,3] (x, y, stride) of every feature-map point, level by level, row-major (points at cell corners)."""
    out = []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s
        xs = torch.arange(w, device=device, dtype=torch.float32) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full_like(gx.reshape(-1), float(s))], dim=1))
    return torch.cat(out, dim=0)


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """[B,C,h,w] per level -> [B, sum(h*w), C]."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def distance_to_boxes(priors: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """xyxy boxes from points and (left, top, right, bottom) distances."""
    pts = priors[..., :2]
    return torch.cat([pts - distances[..., :2], pts + distances[..., 2:]], dim=-1)


def detect_single(
    scores: torch.Tensor,  # [A, K] probabilities
    boxes: torch.Tensor,  # [A, 4]
    kernels: torch.Tensor,  # [A, P]
    priors: torch.Tensor,  # [A, 3]
    prototypes: torch.Tensor,  # [C, h, w]
    head,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4], scores [N], labels [N] 1..K, mask probabilities [N,h,w] at the prototype stride).

    Every (point, class) pair above the score threshold is a candidate (multi-label); the best ``nms_pre`` go
    through class-aware NMS and the best ``max_dets`` survivors get masks.
    """
    point, out_boxes, out_scores, labels = select_detections(scores, boxes, cfg)
    stride = head.strides[0]
    logits = dynamic_mask_logits(
        prototypes, kernels[point], priors[point, :2], priors[point, 2], head.dyn_sizes, stride
    )
    return out_boxes, out_scores, labels, logits.sigmoid()


def select_detections(
    scores: torch.Tensor, boxes: torch.Tensor, cfg: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(point index, box, score, label 1..K) of each detection kept from per-point class scores [A,K] and boxes
    [A,4]: every (point, class) pair above ``score_threshold`` is a candidate (multi-label), the best ``nms_pre``
    go through class-aware NMS at ``nms_iou`` and the best ``max_dets`` survive. Traceable, zero kept included."""
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    top_scores, top_idx = flat.topk(min(int(cfg["nms_pre"]), flat.shape[0]))
    keep = top_scores > cfg["score_threshold"]
    top_scores, top_idx = top_scores[keep], top_idx[keep]
    point = torch.div(top_idx, num_classes, rounding_mode="floor")
    label = top_idx - point * num_classes
    cand_boxes = boxes[point]
    kept = class_separated_nms(cand_boxes, top_scores, label, cfg["nms_iou"], boxes.abs().max())
    kept = kept[: int(cfg["max_dets"])]
    return point[kept], cand_boxes[kept], top_scores[kept], label[kept] + 1


def class_separated_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float, bound: torch.Tensor
) -> torch.Tensor:
    """NMS within each class (boxes of different classes shifted apart by ``bound + 1`` per class index).

    ``bound`` (largest |coordinate| of all boxes, never an empty reduction) is given rather than taken from the
    candidates, which may be none; the shift adds columns of equal shape, which keeps "no candidates" empty in
    OpenVINO too (its CPU plugin broadcasts [0,4] + [0,1] to one row)."""
    offsets = labels.to(boxes.dtype) * (bound + 1)
    shifted = torch.stack([boxes[:, i] + offsets for i in range(4)], dim=1)
    return nms(shifted, scores, iou)


def sample_grid(n_out: int, in_extent: float, out_extent: int, n_low: int, stride: int, offset: float = 0.0):
    """Normalised grid_sample coordinates (align_corners=False) of ``n_out`` output pixels starting at ``offset``.

    Output pixel x (original image) has centre (x + 0.5) * in_extent / out_extent in the network-input frame,
    i.e. that / stride - 0.5 in low-res pixels.
    """
    x = torch.arange(n_out, dtype=torch.float32) + offset
    low = (x + 0.5) * (in_extent / out_extent) / stride - 0.5
    return (2 * low + 1) / n_low - 1


def paste_image_masks(
    probs: torch.Tensor,  # [N, h, w] at `stride` of the padded network input
    boxes: torch.Tensor,  # [N, 4] in original pixels
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
) -> torch.Tensor:
    """[N,1,H,W] mask probabilities at original size, zero outside each box: one bilinear resampling from the
    low-res map straight to the original pixels (as `instaseg.inference.postprocess` does per box)."""
    n, h, w = probs.shape
    out_h, out_w = image_size
    if n == 0:
        return probs.new_zeros((0, 1, out_h, out_w))
    gx = sample_grid(out_w, input_size[1], out_w, w, stride).to(probs.device)
    gy = sample_grid(out_h, input_size[0], out_h, h, stride).to(probs.device)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # [H, W, 2] as (x, y)
    full = F.grid_sample(
        probs[:, None], grid[None].expand(n, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False
    )
    xs = torch.arange(out_w, device=probs.device)
    ys = torch.arange(out_h, device=probs.device)
    x0, y0 = boxes[:, 0].floor()[:, None], boxes[:, 1].floor()[:, None]
    x1, y1 = boxes[:, 2].ceil()[:, None], boxes[:, 3].ceil()[:, None]
    inside_x = (xs[None] >= x0) & (xs[None] < x1)
    inside_y = (ys[None] >= y0) & (ys[None] < y1)
    return full * (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(full.dtype)
