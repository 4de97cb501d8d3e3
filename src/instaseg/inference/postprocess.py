"""Post-processing shared by every backend: boxes back to the original image, masks pasted and RLE-encoded.

A backend returns low-resolution mask probabilities (e.g. 28x28 per box). Pasting all of them at full image
size at once, as torchvision does, needs N x H x W floats: 2,000 instances on a 4K image would be 66 GB. Here each
mask is resized to its own box only, thresholded, and encoded to COCO RLE straight from that crop, so memory
stays at one box-sized mask plus the RLE strings, and time scales with box area rather than image area.
The geometry of a per-box mask is the detector's ``mask_paste``: torchvision's `paste_masks_in_image` (one pixel of
zero padding around the small mask, the box enlarged to match, integer box corners inclusive; `paste_mask`, which
matches its masks pixel for pixel up to interpolation rounding) or the exact one of Detectron2, mmdetection and
PaddleDetection (the map spans the box exactly, sampled bilinearly at every pixel centre; `paste_mask_exact`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from instaseg.data.masks import rle_to_json
from instaseg.models.common.mask_resample import ImageMaskResample
from instaseg.models.detector import Detector, RawOutput


@dataclass
class RawDetections:
    """One image's backend output, in the network-input frame (the resized image, before padding).

    boxes [N,4] xyxy float, scores [N], labels [N] (1..K), masks [N,M,M] float probabilities in [0,1].
    ``mask_stride``: None for box-relative masks (Mask R-CNN: each [M,M] mask spans its box); an integer S for
    image-frame masks (RTMDet-Ins: [N,h,w] probabilities where pixel (i, j) covers network-input pixels
    [S*i, S*i+S) x [S*j, S*j+S) of the padded input, top-left aligned). ``mask_logits``: the masks are logits,
    resampled as such and thresholded at the threshold's logit. ``mask_box_crop`` (image-frame masks): pixels
    outside the box are background; False keeps the whole mask. ``mask_paste`` (per-box masks): "torchvision"
    (`paste_mask`) or "exact" (`paste_mask_exact`). ``mask_resample`` (image-frame masks): "direct"
    (`paste_image_mask`), "canvas_rescale" or "two_step" (`instaseg.models.common.mask_resample`). See
    `instaseg.models.detector.Detector`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    mask_stride: int | None = None
    mask_logits: bool = False
    mask_box_crop: bool = True
    mask_paste: str = "torchvision"
    mask_resample: str = "direct"

    @classmethod
    def from_output(cls, out: RawOutput, detector: Detector) -> RawDetections:
        """A detector's `RawOutput` (tensors, any device) as numpy arrays on the host, with its mask layout."""
        return cls(
            boxes=out.boxes.float().cpu().numpy(),
            scores=out.scores.float().cpu().numpy(),
            labels=out.labels.cpu().numpy(),
            masks=out.masks.float().cpu().numpy(),
            mask_stride=detector.mask_stride,
            mask_logits=bool(detector.mask_logits),
            mask_box_crop=bool(detector.mask_box_crop),
            mask_paste=str(detector.mask_paste),
            mask_resample=str(detector.mask_resample),
        )


@dataclass
class Detections:
    """One image's final detections in original image pixels; masks as json-ready compressed RLE."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    rles: list[dict] = field(default_factory=list)


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from an image of size (h, w) ``from_size`` to one of size ``to_size`` (torchvision's rule)."""
    ratio_h = to_size[0] / from_size[0]
    ratio_w = to_size[1] / from_size[1]
    return boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], dtype=boxes.dtype)


def paste_mask(
    mask: np.ndarray, box: np.ndarray, im_h: int, im_w: int, threshold: float = 0.5, padding: int = 1
) -> tuple[np.ndarray, int, int]:
    """Resize one low-res mask [M,M] of probabilities into its box; returns (bool crop, x0, y0) inside the image.

    The crop covers the box clipped to the image; pixels outside it are background.
    """
    m = mask.shape[-1]
    scale = (m + 2 * padding) / m
    padded = np.pad(mask.astype(np.float32, copy=False), padding)
    cx, cy = (box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5
    half_w, half_h = (box[2] - box[0]) * 0.5 * scale, (box[3] - box[1]) * 0.5 * scale
    # truncation toward zero, like torchvision's .to(torch.int64)
    bx0, by0, bx1, by1 = (int(v) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
    x0, x1 = max(bx0, 0), min(bx1 + 1, im_w)
    y0, y1 = max(by0, 0), min(by1 + 1, im_h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    # cv2's bilinear uses the same half-pixel centres as torch's align_corners=False
    resized = cv2.resize(padded, (w, h), interpolation=cv2.INTER_LINEAR)
    crop = resized[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0] > threshold
    return crop, x0, y0


def box_resample_matrix(n_out: int, start: int, low: float, high: float, n_in: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights: output pixel k (centre ``start + k + 0.5``) samples a map of ``n_in`` cells
    spanning [low, high) exactly, zero beyond the map (grid_sample with zero padding, align_corners False)."""
    coord = (np.arange(start, start + n_out, dtype=np.float64) + 0.5 - low) / (high - low) * n_in - 0.5
    i0 = np.floor(coord).astype(np.int64)
    frac = (coord - i0).astype(np.float32)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    for index, weight in ((i0, 1 - frac), (i0 + 1, frac)):
        inside = (index >= 0) & (index < n_in)
        weights[rows[inside], index[inside]] += weight[inside]
    return weights


def paste_mask_exact(
    mask: np.ndarray, box: np.ndarray, im_h: int, im_w: int, threshold: float = 0.5
) -> tuple[np.ndarray, int, int]:
    """`paste_mask` the way Detectron2, mmdetection and PaddleDetection paste: the [M,M] map spans the box
    exactly, sampled bilinearly at each pixel centre with zeros beyond it, foreground where >= ``threshold``.
    The crop is the pixels a sample can reach: the box and half a map cell around it, clipped to the image."""
    m_h, m_w = mask.shape
    x_lo, y_lo, x_hi, y_hi = (float(v) for v in box[:4])
    if not (x_hi > x_lo and y_hi > y_lo):
        return np.zeros((0, 0), dtype=bool), 0, 0
    half_w, half_h = 0.5 * (x_hi - x_lo) / m_w, 0.5 * (y_hi - y_lo) / m_h
    x0, x1 = max(int(np.floor(x_lo - half_w)), 0), min(int(np.ceil(x_hi + half_w)), im_w)
    y0, y1 = max(int(np.floor(y_lo - half_h)), 0), min(int(np.ceil(y_hi + half_h)), im_h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    rows = box_resample_matrix(y1 - y0, y0, y_lo, y_hi, m_h)
    cols = box_resample_matrix(x1 - x0, x0, x_lo, x_hi, m_w)
    return rows @ mask.astype(np.float32, copy=False) @ cols.T >= threshold, x0, y0


def crop_to_rle(crop: np.ndarray, x0: int, y0: int, im_h: int, im_w: int) -> dict:
    """COCO compressed RLE (json-ready) of an image that is ``crop`` at (x0, y0) and background elsewhere.

    Runs are found on the crop alone (column-major, as COCO counts them), then shifted to image indices.
    """
    h, w = crop.shape
    cols = np.zeros((w, h + 2), dtype=np.int8)
    cols[:, 1:-1] = crop.T
    # every column starts and ends on background, so its changes alternate start, end, start...: one search
    # over the flat changes (row-major over (column, row): image order) finds both (a comparison and a 2-d
    # search per sign took 11% longer per mask)
    changes = np.flatnonzero(np.diff(cols, axis=1))
    col, row = np.divmod(changes, h + 1)
    flat = (x0 + col) * im_h + y0 + row
    starts, ends = flat[0::2], flat[1::2]
    if len(starts) > 1:  # a run reaching the bottom of a full-height column continues at the top of the next
        keep = starts[1:] != ends[:-1]
        starts = np.concatenate([starts[:1], starts[1:][keep]])
        ends = np.concatenate([ends[:-1][keep], ends[-1:]])
    total = im_h * im_w
    if len(starts) == 0:
        counts = [total]
    else:
        bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 0, total
        bounds[1:-1:2], bounds[2:-1:2] = starts, ends
        counts = np.diff(bounds).tolist()
        if counts[-1] == 0:
            counts.pop()
    rle = mask_utils.frPyObjects({"counts": counts, "size": [im_h, im_w]}, im_h, im_w)
    return rle_to_json(rle)


def rle_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, vectorised).

    Each count is written as 5-bit groups, low first, with 0x20 meaning "more follows" and 0x10 in the last group
    a sign; from the third count on, a count is stored as the difference to the one two places before.
    """
    raw = np.frombuffer(counts.encode("ascii") if isinstance(counts, str) else counts, dtype=np.uint8)
    chars = raw.astype(np.int64) - 48
    if len(chars) == 0:
        return np.zeros(0, dtype=np.int64)
    last = (chars & 0x20) == 0
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    shift = 5 * (np.arange(len(chars)) - starts[group])
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    ends = np.flatnonzero(last)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (shift[ends[negative]] + 5)
    out = values.copy()
    out[2::2] = np.cumsum(values[2::2])  # index 2 is stored as is, 4, 6... as differences
    if len(values) > 3:
        out[3::2] = values[1] + np.cumsum(values[3::2])
    return out


def rle_to_crop(rle: dict, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The [h,w] bool window at (x0, y0) of a compressed RLE mask, without decoding the whole image.

    Only the window's columns are expanded (image height x window width), so drawing a small instance on a
    4K picture costs its box, not the picture.
    """
    im_h = int(rle["size"][0])
    counts = rle_counts(rle["counts"])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    run_starts, run_ends = bounds[1:-1:2], bounds[2::2]  # foreground runs, column-major indices
    lo, hi = x0 * im_h, (x0 + w) * im_h
    keep = (run_ends > lo) & (run_starts < hi)
    step = np.zeros(hi - lo + 1, dtype=np.int32)
    np.add.at(step, np.clip(run_starts[keep], lo, hi) - lo, 1)
    np.add.at(step, np.clip(run_ends[keep], lo, hi) - lo, -1)
    columns = np.cumsum(step[:-1]).reshape(w, im_h).T
    return columns[y0 : y0 + h].astype(bool)


def masks_to_rles(
    masks: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], threshold: float = 0.5
) -> list[dict]:
    """Paste each low-res mask [N,M,M] into its box (original pixels) and encode it; one mask in memory at a time."""
    im_h, im_w = image_size
    rles = []
    for mask, box in zip(masks, boxes, strict=True):
        crop, x0, y0 = paste_mask(mask, box, im_h, im_w, threshold)
        rles.append(crop_to_rle(crop, x0, y0, im_h, im_w))
    return rles


def resample_matrix(n_out: int, start: int, scale: float, n_in: int) -> tuple[np.ndarray, int]:
    """Bilinear weights of output pixels ``start .. start + n_out - 1``, restricted to the input pixels they read:
    ([n_out, k] weights, index of the first of those k input pixels). Output pixel k samples input coordinate
    (start + k + 0.5) * scale - 0.5, clamped to the input's edge (grid_sample's border padding)."""
    coord = np.clip((np.arange(start, start + n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0, n_in - 1)
    i0 = np.floor(coord).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (coord - i0).astype(np.float32)
    first = int(i0[0]) if n_out else 0
    weights = np.zeros((n_out, int(i1[-1]) - first + 1 if n_out else 0), dtype=np.float32)
    rows = np.arange(n_out)
    # each row once per statement, so += adds like np.add.at (where i1 == i0 at the edge, the second adds on)
    weights[rows, i0 - first] += 1 - frac
    weights[rows, i1 - first] += frac
    return weights, first


def paste_image_mask(
    mask: np.ndarray,
    box: np.ndarray,
    stride: int,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    threshold: float = 0.5,
) -> tuple[np.ndarray, int, int]:
    """An image-frame low-res mask [h,w] (see `RawDetections.mask_stride`) resampled straight to the original
    pixels of its box, and nothing outside it: (bool crop, x0, y0). One bilinear step on the low-res window under
    the box, so the cost is the box's (a stride-4 map of a 640 px input is 160 x 160: multiplying the whole of it
    for each box cost 50x more for a 64 px box). The values may be probabilities or logits: ``threshold`` is in
    their units."""
    im_h, im_w = image_size
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), im_w), min(int(np.ceil(box[3])), im_h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    rows, top = resample_matrix(y1 - y0, y0, input_size[0] / (im_h * stride), mask.shape[0])
    cols, left = resample_matrix(x1 - x0, x0, input_size[1] / (im_w * stride), mask.shape[1])
    window = mask[top : top + rows.shape[1], left : left + cols.shape[1]].astype(np.float32, copy=False)
    return rows @ window @ cols.T > threshold, x0, y0


def logit(p: float) -> float:
    """The logit of a probability threshold (0 and 1 map to -inf and +inf: everything, or nothing, passes)."""
    if p <= 0.0:
        return float("-inf")
    if p >= 1.0:
        return float("inf")
    return float(np.log(p / (1.0 - p)))


def mask_extents(
    masks: np.ndarray, threshold: float, stride: int, input_size: tuple[int, int], image_size: tuple[int, int]
) -> np.ndarray:
    """[N,4] xyxy windows in original pixels that hold every pixel where each image-frame mask [N,h,w],
    bilinearly resampled, exceeds ``threshold``: a resampled value is a weighted mean of at most four neighbouring
    low-res values, so it can pass only within one low-res pixel of a low-res value that passes. An empty window
    (nothing passes) for a mask with no such value. The paste of an uncut mask then costs its own extent."""
    above = masks > threshold
    rows, cols = above.any(axis=2), above.any(axis=1)
    out = np.zeros((len(masks), 4), dtype=np.float32)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        if not r.any():
            continue
        r_idx, c_idx = np.flatnonzero(r), np.flatnonzero(c)
        # low-res pixel j spans input pixels [stride*j, stride*(j+1)); one more on each side, in original pixels
        y0, y1 = (r_idx[0] - 1) * stride, (r_idx[-1] + 2) * stride
        x0, x1 = (c_idx[0] - 1) * stride, (c_idx[-1] + 2) * stride
        window = scale_boxes(np.array([[x0, y0, x1, y1]], dtype=np.float32), input_size, image_size)[0]
        out[i] = window + np.array([-1, -1, 1, 1], dtype=np.float32)  # whatever the scale, a whole pixel more
    return out


@dataclass
class CropDetections:
    """Detections whose masks are each a bool crop at (x0, y0) of its box: sparse, before RLE encoding.

    What tiled prediction shifts and merges: memory is the boxes' areas, never the image's per instance.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    crops: list[tuple[np.ndarray, int, int]]

    def to_detections(self, image_size: tuple[int, int]) -> Detections:
        rles = [crop_to_rle(crop, x0, y0, *image_size) for crop, x0, y0 in self.crops]
        return Detections(boxes=self.boxes, scores=self.scores, labels=self.labels, rles=rles)


def postprocess_crops(
    raw: RawDetections,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    score_threshold: float = 0.0,
    mask_threshold: float = 0.5,
) -> CropDetections:
    """`postprocess` up to the masks' crops (each in ``image_size`` pixels), before RLE encoding."""
    keep = np.asarray(raw.scores) >= score_threshold
    h, w = input_size
    # the contract has boxes clipped to the image already; a graph exported by another version may not
    input_boxes = np.asarray(raw.boxes, dtype=np.float32)[keep].clip(0, np.array([w, h, w, h], dtype=np.float32))
    boxes = scale_boxes(input_boxes, input_size, image_size)
    masks = np.asarray(raw.masks)[keep]
    im_h, im_w = image_size
    threshold = logit(mask_threshold) if raw.mask_logits else mask_threshold
    if raw.mask_stride and raw.mask_resample != "direct" and len(masks):
        geometry = ImageMaskResample(raw.mask_resample, raw.mask_stride, masks.shape[1:], input_size, image_size)
        if raw.mask_box_crop:  # cut to the box in the input frame, between the geometry's two steps
            crops = [geometry.paste_cut(m, b, threshold) for m, b in zip(masks, input_boxes, strict=True)]
        else:
            windows = geometry.extents(masks, threshold)
            crops = [geometry.paste(m, b, threshold) for m, b in zip(masks, windows, strict=True)]
    elif raw.mask_stride:
        stride = raw.mask_stride
        windows = boxes if raw.mask_box_crop else mask_extents(masks, threshold, stride, input_size, image_size)
        crops = [
            paste_image_mask(m, b, raw.mask_stride, input_size, image_size, threshold)
            for m, b in zip(masks, windows, strict=True)
        ]
    else:
        paste = paste_mask_exact if raw.mask_paste == "exact" else paste_mask
        crops = [paste(m, b, im_h, im_w, threshold) for m, b in zip(masks, boxes, strict=True)]
    return CropDetections(
        boxes=boxes,
        scores=np.asarray(raw.scores, dtype=np.float32)[keep],
        labels=np.asarray(raw.labels, dtype=np.int64)[keep],
        crops=crops,
    )


def postprocess(
    raw: RawDetections,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    score_threshold: float = 0.0,
    mask_threshold: float = 0.5,
) -> Detections:
    """Keep detections above ``score_threshold``, map boxes from ``input_size`` to ``image_size``, paste masks."""
    return postprocess_crops(raw, input_size, image_size, score_threshold, mask_threshold).to_detections(image_size)
