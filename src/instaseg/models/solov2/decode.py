"""SOLOv2 inference: cell scores -> candidates -> dynamic masks -> maskness -> Matrix NMS -> boxes from masks.

Written once for eager and exported graphs: every step is a tensor op ONNX expresses (TopK, boolean indexing,
MatMul, MaxPool, reductions), with no loop over instances. Zero detections stay valid in every backend because
the middle of the pipeline never runs on an empty set: the best candidate always rides along, marked invalid
when it fails a threshold, and a single final selection drops every invalid or low-scored row.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

_FAR = 1e8  # "no extent" in a min/max over mask pixels: finite, so exporters never meet inf


class TestConfig(NamedTuple):
    cls_score_thr: float  # category score a cell needs to become a candidate
    mask_thr: float  # probability above which a mask pixel is foreground
    max_candidates: int  # (cell, class) pairs above cls_score_thr whose masks are computed
    nms_pre: int  # candidates into Matrix NMS, the best after maskness rescoring
    nms_kernel: str  # gaussian | linear
    nms_sigma: float
    score_threshold: float  # final score a detection needs (after maskness and decay)
    max_dets: int


def point_nms(probs: torch.Tensor) -> torch.Tensor:
    """Zero every cell score that is not the maximum of its 2 x 2 neighbourhood (up-left), per class: a cheap
    first suppression, since neighbouring cells of one object predict the same mask."""
    peak = F.max_pool2d(probs, kernel_size=2, stride=1, padding=1)[..., :-1, :-1]
    return probs * (peak == probs).to(probs.dtype)


def matrix_nms(
    masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, kernel: str = "gaussian", sigma: float = 2.0
) -> torch.Tensor:
    """Decayed scores of N binary masks [N, P] sorted by descending score (Matrix NMS, SOLOv2 sec. 3.3.3).

    A mask's decay is the smallest, over higher-scored masks i of its class, of f(IoU_ij) / f(IoU_i,max), where
    IoU_i,max is i's own largest IoU with a mask above it: a mask that is itself suppressed suppresses less.
    f(x) = exp(-sigma x^2) (gaussian) or 1 - x (linear). One matrix product, no loop.
    """
    n = masks.shape[0]
    areas = masks.sum(dim=1)
    inter = masks @ masks.T
    union = (areas[:, None] + areas[None, :] - inter).clamp(min=1)
    order = torch.arange(n, device=masks.device)
    above = (order[:, None] < order[None, :]) & (labels[:, None] == labels[None, :])  # i above j, same class
    iou = inter / union * above.to(inter.dtype)
    # a leading row of zeros / ones keeps the reductions over a non-empty axis when n is 0
    compensate = torch.cat([iou.new_zeros((1, n)), iou], dim=0).amax(dim=0)  # [N]: max IoU with masks above
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou**2 - compensate[:, None] ** 2))
    else:
        decay = (1 - iou) / (1 - compensate[:, None]).clamp(min=1e-6)
    return scores * torch.cat([decay.new_ones((1, n)), decay], dim=0).amin(dim=0)


def _axis_extent(probs: torch.Tensor, stride: int, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Along the last axis of [N, a, b] probabilities at ``stride``: (start, end) in input pixels of the region
    where the bilinear upsampling (pixel centres at stride x (j + 0.5), edges held constant) exceeds ``thr``."""
    above = probs > thr
    prev = torch.cat([probs[..., :1], probs[..., :-1]], dim=-1)  # edge replicated: the value holds past it
    nxt = torch.cat([probs[..., 1:], probs[..., -1:]], dim=-1)
    # how far towards each neighbour's centre the value stays above thr (1: all the way, or past the edge)
    reach_left = ((probs - thr) / (probs - prev).clamp(min=1e-6)).clamp(0, 1)
    reach_right = ((probs - thr) / (probs - nxt).clamp(min=1e-6)).clamp(0, 1)
    centers = (torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype) + 0.5) * stride
    start = torch.where(above, centers - stride * reach_left, torch.full_like(probs, _FAR))
    end = torch.where(above, centers + stride * reach_right, torch.full_like(probs, -_FAR))
    return start.amin(dim=(1, 2)), end.amax(dim=(1, 2))


def mask_boxes(probs: torch.Tensor, stride: int, thr: float = 0.5) -> torch.Tensor:
    """[N,4] xyxy boxes (input pixels, unclipped) enclosing where each mask [N,h,w] at ``stride``, bilinearly
    upsampled, exceeds ``thr``: exactly the region the shared post-processing pastes, so no pixel of it falls
    outside its box. In 2-D bilinear a value above thr needs a row (or column) above thr next to it, so the
    x-extent is the widest row's and the y-extent the widest column's."""
    x0, x1 = _axis_extent(probs, stride, thr)
    y0, y1 = _axis_extent(probs.transpose(1, 2), stride, thr)
    return torch.stack([x0, y0, x1, y1], dim=1)


def detect_single(
    scores: torch.Tensor,  # [A, K] probabilities after point NMS
    kernels: torch.Tensor,  # [A, E]
    mask_feats: torch.Tensor,  # [E, h, w]
    cell_strides: torch.Tensor,  # [A] the stride of each cell's level (the minimum mask area, in mask pixels)
    stride: int,  # of the mask feature
    cfg: TestConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4] input frame, scores [N], labels [N] 1..K, mask probabilities [N,h,w]) of one image."""
    num_classes = scores.shape[1]
    top_scores, top_idx = scores.reshape(-1).topk(min(cfg.max_candidates, scores.numel()))
    first = torch.arange(top_scores.shape[0], device=scores.device) == 0
    take = (top_scores > cfg.cls_score_thr) | first  # the best candidate always rides along (see module notes)
    top_scores, top_idx = top_scores[take], top_idx[take]
    cell = torch.div(top_idx, num_classes, rounding_mode="floor")
    labels = top_idx - cell * num_classes
    e, h, w = mask_feats.shape
    probs = (kernels[cell] @ mask_feats.reshape(e, h * w)).sigmoid()
    binary = (probs > cfg.mask_thr).to(probs.dtype)
    area = binary.sum(dim=1)
    valid = (top_scores > cfg.cls_score_thr) & (area > cell_strides[cell])
    maskness = (probs * binary).sum(dim=1) / area.clamp(min=1)  # mean foreground probability: mask quality
    rescored = torch.where(valid, top_scores * maskness, torch.full_like(maskness, -1.0))
    rescored, order = rescored.sort(descending=True)
    # the best nms_pre after maskness rescoring, as MMDetection's mask_matrix_nms takes them (not before it)
    rescored, order = rescored[: cfg.nms_pre], order[: cfg.nms_pre]
    decayed = matrix_nms(binary[order], labels[order], rescored, cfg.nms_kernel, cfg.nms_sigma)
    final, again = decayed.sort(descending=True)
    final, again = final[: cfg.max_dets], again[: cfg.max_dets]
    pick = order[again]
    keep = valid[pick] & (final >= cfg.score_threshold)
    masks = probs[pick].reshape(-1, h, w)
    boxes = mask_boxes(masks, stride, cfg.mask_thr)
    return boxes[keep], final[keep], labels[pick][keep] + 1, masks[keep]
