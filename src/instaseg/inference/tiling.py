"""Tiled prediction: a large image cut into overlapping tiles plus one pass over the whole image, merged.

Small objects on a large picture vanish when the whole picture is resized to the network's input; on a tile
resized to it, they keep their pixels. Each tile runs the predictor's ordinary path (pre-processing, backend,
post-processing), so every backend (torch, ONNX Runtime, OpenVINO, TensorRT) gets tiling. The whole-image pass
finds objects larger than a tile (only its instances longer than the tile overlap are kept: smaller ones lie
whole in some tile and are seen there at a finer scale); it reads a copy shrunk (area interpolation) to what
the resize rule would give, so no image-sized float array is made however large the picture.

Masks stay sparse throughout: each instance is a bool crop of its own box (`CropDetections`), shifted by its
tile's corner, and is encoded to RLE only after merging. The merge is class-wise, mask-aware NMS in priority
order (score, halved for an instance cut by a tile's inner border): a later instance of the same class is
dropped when its mask IoU with a kept one reaches ``merge_iou``, or, for a cut instance, when most of it
(CUT_INSIDE_SHARE) lies inside a kept one, the rest of the object that another tile holds whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from instaseg.data.tiles import tile_windows
from instaseg.data.transforms import resized_size
from instaseg.inference.postprocess import CropDetections

CUT_INSIDE_SHARE = 0.7  # a cut instance this much inside a kept same-class one is a piece of it
CUT_PRIORITY = 0.5  # ranking factor of an instance touching a tile's inner border
BORDER_PX = 2  # an instance within this many pixels of a tile's inner border is cut by it
TILE_BATCH = 4  # tiles per backend call


@dataclass(frozen=True)
class TilingOptions:
    """``size``: tile side in image pixels (None: no tiling); ``overlap``: share of a tile shared with the next;
    ``full_image_pass``: also detect on the whole image; ``merge_iou``: mask IoU that makes two instances one;
    ``max_dets``: instances kept per image after merging (None: all)."""

    size: int | None = None
    overlap: float = 0.2
    full_image_pass: bool = True
    merge_iou: float = 0.5
    max_dets: int | None = None

    @classmethod
    def from_info(cls, info: dict) -> TilingOptions:
        """What a checkpoint's recipe (or an export's metadata) recorded; no tiling when nothing was."""
        recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
        tiling = info.get("tiling") or recipe.get("tiling") or {}
        max_dets = info.get("max_dets") or (recipe.get("eval") or {}).get("max_dets")
        return cls(
            size=int(tiling["size"]) if tiling.get("size") else None,
            overlap=float(tiling.get("overlap", 0.2)),
            full_image_pass=bool(tiling.get("full_image_pass", True)),
            merge_iou=float(tiling.get("merge_iou", 0.5)),
            max_dets=int(max_dets) if max_dets else None,
        )

    def choose(self, tile: str | int | None) -> TilingOptions:
        """``tile``: "auto" or None (these options), "off", or a tile size in pixels."""
        if tile is None or tile == "auto":
            return self
        if tile == "off":
            return TilingOptions(None, self.overlap, self.full_image_pass, self.merge_iou, self.max_dets)
        size = int(tile)
        if size < 32:
            raise ValueError(f"tile size must be at least 32 pixels, got {size}")
        return TilingOptions(size, self.overlap, self.full_image_pass, self.merge_iou, self.max_dets)

    def applies_to(self, height: int, width: int) -> bool:
        return self.size is not None and max(height, width) > self.size


def window_of(image: np.ndarray | torch.Tensor, window: tuple[int, int, int, int]) -> np.ndarray | torch.Tensor:
    """The pixels of ``window`` (x0, y0, x1, y1) of an HxWx3 array or a [3,H,W] tensor (a view, no copy)."""
    x0, y0, x1, y1 = window
    return image[..., y0:y1, x0:x1] if isinstance(image, torch.Tensor) else image[y0:y1, x0:x1]


def shrink_for_input(
    image: np.ndarray | torch.Tensor, min_size: int, max_size: int, keep_ratio: bool = True
) -> np.ndarray | torch.Tensor:
    """The image shrunk to what the resize rule makes of it (a side the rule would enlarge is left as it is: a
    stretched image's sides scale apart, so shrinking one alone changes nothing the resize then does)."""
    h, w = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    new_h, new_w = resized_size(h, w, min_size, max_size, keep_ratio)
    new_h, new_w = min(new_h, h), min(new_w, w)
    if (new_h, new_w) == (h, w) or (keep_ratio and new_h >= h):
        return image
    if isinstance(image, torch.Tensor):
        return F.interpolate(image[None], size=(new_h, new_w), mode="area")[0]
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def shift(detections: CropDetections, dx: int, dy: int) -> CropDetections:
    """Detections of a tile moved to the image frame (the tile's corner at (dx, dy))."""
    boxes = detections.boxes + np.array([dx, dy, dx, dy], dtype=np.float32)
    crops = [(crop, x0 + dx, y0 + dy) for crop, x0, y0 in detections.crops]
    return CropDetections(boxes, detections.scores, detections.labels, crops)


def cut_by_border(boxes: np.ndarray, window: tuple[int, int, int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """[N] bool: the box touches a border of ``window`` that is not the image's border (the object may go on)."""
    x0, y0, x1, y1 = window
    h, w = image_hw
    cut = np.zeros(len(boxes), dtype=bool)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + BORDER_PX
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + BORDER_PX
    if x1 < w:
        cut |= boxes[:, 2] >= x1 - BORDER_PX
    if y1 < h:
        cut |= boxes[:, 3] >= y1 - BORDER_PX
    return cut


def concat(parts: list[CropDetections]) -> CropDetections:
    if not parts:
        return CropDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [])
    return CropDetections(
        boxes=np.concatenate([p.boxes.reshape(-1, 4) for p in parts]).astype(np.float32),
        scores=np.concatenate([p.scores for p in parts]).astype(np.float32),
        labels=np.concatenate([p.labels for p in parts]).astype(np.int64),
        crops=[c for p in parts for c in p.crops],
    )


def _overlap_counts(a: tuple[np.ndarray, int, int], b: tuple[np.ndarray, int, int]) -> int:
    """Pixels two crops (each placed at its corner) share."""
    (ma, ax, ay), (mb, bx, by) = a, b
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + ma.shape[1], bx + mb.shape[1]), min(ay + ma.shape[0], by + mb.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0
    wa = ma[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
    wb = mb[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return int(np.count_nonzero(wa & wb))


def merge(detections: CropDetections, cut: np.ndarray, merge_iou: float, max_dets: int | None) -> CropDetections:
    """Class-wise mask-aware NMS over detections from tiles and the whole image (see the module notes)."""
    n = len(detections.scores)
    priority = detections.scores * np.where(cut, CUT_PRIORITY, 1.0)
    order = np.argsort(-priority, kind="stable")
    areas = np.array([np.count_nonzero(c[0]) for c in detections.crops], dtype=np.int64)
    boxes, labels = detections.boxes, detections.labels
    kept: list[int] = []
    kept_boxes = np.zeros((n, 4), dtype=np.float32)
    kept_labels = np.zeros(n, dtype=np.int64)
    for i in order:
        if areas[i] == 0:
            continue
        k, box = len(kept), boxes[i]
        kb = kept_boxes[:k]
        near = (kept_labels[:k] == labels[i]) & (kb[:, 0] < box[2]) & (kb[:, 2] > box[0])
        near &= (kb[:, 1] < box[3]) & (kb[:, 3] > box[1])
        if not any(_same_object(detections, i, kept[j], areas, cut[i], merge_iou) for j in np.flatnonzero(near)):
            kept_boxes[k], kept_labels[k] = box, labels[i]
            kept.append(int(i))
    kept.sort(key=lambda j: -detections.scores[j])
    if max_dets is not None:
        kept = kept[:max_dets]
    index = np.array(kept, dtype=np.int64)
    return CropDetections(boxes[index], detections.scores[index], labels[index], [detections.crops[j] for j in kept])


def _same_object(det: CropDetections, i: int, j: int, areas: np.ndarray, is_cut: bool, merge_iou: float) -> bool:
    inter = _overlap_counts(det.crops[i], det.crops[j])
    if inter == 0:
        return False
    if inter / (areas[i] + areas[j] - inter) >= merge_iou:
        return True
    return bool(is_cut and inter / areas[i] >= CUT_INSIDE_SHARE)


def _larger_than_overlap(detections: CropDetections, overlap_px: float) -> CropDetections:
    """The whole-image pass's instances that may lie whole in no tile: those longer than the overlap. Smaller
    ones lie whole in some tile, seen there at a finer scale; the coarse pass's copy would only blur the merge."""
    sides = np.maximum(detections.boxes[:, 2] - detections.boxes[:, 0], detections.boxes[:, 3] - detections.boxes[:, 1])
    keep = np.flatnonzero(sides >= overlap_px)
    crops = [detections.crops[i] for i in keep]
    return CropDetections(detections.boxes[keep], detections.scores[keep], detections.labels[keep], crops)


def tiled_detect(
    detect_crops: Any,
    image: np.ndarray | torch.Tensor,
    options: TilingOptions,
    input_sizes: tuple[int, int],
    keep_ratio: bool = True,
) -> CropDetections:
    """Detections of one large image: ``detect_crops(images, image_sizes)`` (the predictor's per-image path,
    returning `CropDetections` in each given size) on every tile, and on the shrunk whole image pasted back at
    full size; merged. ``input_sizes``: the model's (min_size, max_size); ``keep_ratio``: its resize rule."""
    h, w = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    assert options.size is not None
    windows = tile_windows(h, w, options.size, options.overlap)
    parts, cuts = [], []
    for start in range(0, len(windows), TILE_BATCH):
        batch = windows[start : start + TILE_BATCH]
        tiles = [window_of(image, win) for win in batch]
        sizes = [(win[3] - win[1], win[2] - win[0]) for win in batch]
        for win, found in zip(batch, detect_crops(tiles, sizes), strict=True):
            moved = shift(found, win[0], win[1])
            parts.append(moved)
            cuts.append(cut_by_border(moved.boxes, win, (h, w)))
    if options.full_image_pass:
        whole = detect_crops([shrink_for_input(image, *input_sizes, keep_ratio)], [(h, w)])[0]
        whole = _larger_than_overlap(whole, options.size * options.overlap)
        parts.append(whole)
        cuts.append(np.zeros(len(whole.scores), dtype=bool))
    merged = concat(parts)
    cut = np.concatenate(cuts) if cuts else np.zeros(0, dtype=bool)
    return merge(merged, cut, options.merge_iou, options.max_dets)
