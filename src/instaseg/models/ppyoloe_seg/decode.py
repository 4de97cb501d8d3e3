"""Inference of PP-YOLOE-seg: scores -> each class's top candidates -> NMS within each class -> prototype masks cut
to the box.

One code path for eager and exported graphs (TopK, boolean indexing, NonMaxSuppression, MatMul), so the ONNX and
OpenVINO models run what the eager model runs; zero detections stay valid shapes throughout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from instaseg.models.common.nms import class_separated_nms
from instaseg.models.detector import clip_boxes
from instaseg.models.ppyoloe_seg.heads import crop_to_boxes

# Stride-8 cells kept around the boxes. A mask pixel (stride 4) lives up to one stride beyond its box; it reads the
# stride-4 3x3 conv's neighbours, their transposed conv's source cells and those cells' stride-8 3x3 neighbours,
# and a window edge inside the map pads with zeros where the whole map has values: 3 cells cover all of it (the
# test fails with 1).
WINDOW_MARGIN = 3
FAR = 1e9  # an edge beyond any picture: the window of no box


def select_per_class(
    scores: torch.Tensor, boxes: torch.Tensor, cfg: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(point index, box, score, label 1..K) of the detections PaddleDetection's MultiClassNMS keeps from per-point
    class scores [A,K] and boxes [A,4]: per class, the best ``nms_pre`` points scoring above ``score_threshold``,
    NMS within the class at ``nms_iou``, then the best ``max_dets`` of all classes. Traceable, none kept included.

    Per class, not over all classes: a cap on all (point, class) pairs drops a busy picture's low-scored
    candidates of every class whose survivors PaddleDetection keeps (and COCO counts: its 100 detections per
    image are per category)."""
    num_points, num_classes = scores.shape
    k = min(int(cfg["nms_pre"]), num_points)
    top_scores, top_points = scores.t().topk(k, dim=1)  # [K, k], each class's best points
    labels = torch.arange(num_classes, device=scores.device)[:, None].expand(-1, k)
    top_scores, top_points, labels = top_scores.reshape(-1), top_points.reshape(-1), labels.reshape(-1)
    keep = top_scores > cfg["score_threshold"]
    top_scores, point, label = top_scores[keep], top_points[keep], labels[keep]
    cand_boxes = boxes[point]
    kept = class_separated_nms(cand_boxes, top_scores, label, cfg["nms_iou"], boxes.abs().max())
    kept = kept[: int(cfg["max_dets"])]
    return point[kept], cand_boxes[kept], top_scores[kept], label[kept] + 1


def detect_single(
    scores: torch.Tensor,  # [A, K] probabilities
    boxes: torch.Tensor,  # [A, 4] xyxy, network-input pixels
    coefficients: torch.Tensor,  # [A, M]
    prototype_input: torch.Tensor,  # [C, h/2, w/2]: the stride-8 map the prototypes are computed from
    prototypes: Callable[[torch.Tensor], torch.Tensor],  # [1, C, y, x] -> [1, M, 2y, 2x]
    image_size: tuple,  # (h, w) of the image inside the padded input: Python ints or traced 0-d tensors
    mask_stride: int,
    cfg: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes [N,4] clipped to the image, scores [N], labels [N] 1..K, mask probabilities [N,h,w] over the padded
    input at ``mask_stride``).

    Every (point, class) pair above the score threshold is a candidate (multi-label, as PP-YOLOE's multi-class
    NMS); per class the best ``nms_pre`` go through NMS and the best ``max_dets`` survivors get masks. A mask
    is zeroed one stride beyond its box: the paste to full size cuts it at the box exactly, and the margin keeps
    the bilinear resampling at the box edge from reading zeros. So the prototypes are computed only on the
    window of the stride-8 map around the kept boxes (`prototype_window`)."""
    point, out_boxes, out_scores, labels = select_per_class(scores, boxes, cfg)
    out_boxes = clip_boxes(out_boxes, image_size[0], image_size[1])
    rows, cols = prototype_window(out_boxes, prototype_input.shape[1], prototype_input.shape[2], 2 * mask_stride)
    window = prototype_input.index_select(1, rows).index_select(2, cols)
    local = prototypes(window[None])[0]  # [M, 2 len(rows), 2 len(cols)]
    # back onto the whole map; outside the window every mask value is cut away below, so any index will do there
    m, wh, ww = local.shape
    h, w = 2 * prototype_input.shape[1], 2 * prototype_input.shape[2]
    at_rows = (torch.arange(h, device=rows.device) - 2 * rows[0]).clamp(0, wh - 1)
    at_cols = (torch.arange(w, device=cols.device) - 2 * cols[0]).clamp(0, ww - 1)
    protos = local.index_select(1, at_rows).index_select(2, at_cols)
    probs = (coefficients[point] @ protos.reshape(m, h * w)).sigmoid().reshape(-1, h, w)
    masks = crop_to_boxes(probs, out_boxes, mask_stride, margin=float(mask_stride))
    return out_boxes, out_scores, labels, masks


def prototype_window(boxes: torch.Tensor, h: int, w: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the cells of an h x w map at ``stride`` whose prototypes can reach the masks of
    ``boxes`` [N,4] (input pixels): their bounding cells, widened by WINDOW_MARGIN. At least one cell each way,
    so no detection still gives valid shapes."""
    far = boxes.new_tensor([[FAR, FAR, -FAR, -FAR]])
    edges = torch.cat([boxes, far])
    lo, hi = edges[:, :2].amin(0), edges[:, 2:].amax(0)  # (x, y) each
    first = (torch.div(lo, stride, rounding_mode="floor") - WINDOW_MARGIN).long()
    last = (torch.div(hi, stride, rounding_mode="floor") + WINDOW_MARGIN).long()
    ends = [(first[i].clamp(0, n - 1), last[i].clamp(0, n - 1)) for i, n in ((1, h), (0, w))]
    return tuple(torch.arange(a, torch.maximum(b, a) + 1, device=boxes.device) for a, b in ends)
