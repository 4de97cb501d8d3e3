"""What a dataset's annotations say about how to train on it: object sizes, crowding, image sizes, anchor fits.

Everything here is numpy over the annotation json (no image is opened): box widths and heights per class,
instances per image, image sizes. On top of those numbers sit the fits a practitioner would make by hand:

- anchor coverage, the standard "anchor recall": for each box, the best IoU over every anchor shape
  (size x aspect ratio per level) centred on the box; a box counts as covered at IoU >= 0.5.
- anchor fitting: sizes by k-means on log box size (scale errors are relative, so distances are too), one group
  of consecutive sizes per pyramid level, aspect ratios by k-means on log(h / w); more sizes per level are
  tried until the coverage target is met.
- the tile size for small objects (OTX's rule: objects of mean area A fill ~3% of a tile of side sqrt(A / 0.03))
  and the tile overlap from the largest objects, so every object lies whole inside at least one tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instaseg.data.coco import CocoData

COVERAGE_IOU = 0.5  # a box counts as covered by an anchor at this IoU (the RPN's positive threshold)
COVERAGE_TARGET = 0.95  # the share of boxes anchor fitting aims to cover
TILE_OBJECT_SHARE = 0.03  # OTX: a mean object fills this share of a tile's area
MAX_TILE_OVERLAP = 0.5


@dataclass
class DatasetStatistics:
    """Per-box and per-image numbers of one split (crowd annotations left out: they are never targets).

    ``box_wh`` [N,2] box width and height in pixels, ``box_image`` [N] the row in ``image_hw`` each box belongs
    to, ``box_class`` [N] category ids, ``image_hw`` [M,2] image height and width, ``per_image`` [M] instances.
    """

    box_wh: np.ndarray
    box_image: np.ndarray
    box_class: np.ndarray
    image_hw: np.ndarray
    per_image: np.ndarray
    class_names: dict[int, str]

    @classmethod
    def of(cls, data: CocoData) -> DatasetStatistics:
        """The statistics of a loaded COCO split."""
        row_of = {img["id"]: i for i, img in enumerate(data.images)}
        image_hw = np.array([(img["height"], img["width"]) for img in data.images], dtype=np.float64).reshape(-1, 2)
        boxes, rows, classes = [], [], []
        for ann in data.annotations:
            bbox = ann.get("bbox")
            if ann.get("iscrowd", 0) or ann.get("image_id") not in row_of or not bbox or min(bbox[2:4]) <= 0:
                continue
            boxes.append(bbox[2:4])
            rows.append(row_of[ann["image_id"]])
            classes.append(ann.get("category_id", -1))
        box_image = np.array(rows, dtype=np.int64)
        return cls(
            box_wh=np.array(boxes, dtype=np.float64).reshape(-1, 2),
            box_image=box_image,
            box_class=np.array(classes, dtype=np.int64),
            image_hw=image_hw,
            per_image=np.bincount(box_image, minlength=len(image_hw)),
            class_names={c["id"]: c["name"] for c in data.categories},
        )

    @property
    def num_boxes(self) -> int:
        return len(self.box_wh)

    def box_sides(self) -> np.ndarray:
        """sqrt(w * h) of each box: its size, whatever its shape."""
        return np.sqrt(self.box_wh.prod(axis=1))

    def summary(self) -> dict:
        """Json-ready numbers: images, instances, instances per image, object and image sizes, per class."""
        sides = self.box_sides()
        out = {
            "images": len(self.image_hw),
            "instances": self.num_boxes,
            "instances_per_image": _percentiles(self.per_image, (50, 100)) | {"mean": _round(self.per_image.mean())},
            "object_size_px": _percentiles(sides, (1, 10, 50, 90, 99)),
            "object_mean_area_px": _round((self.box_wh.prod(axis=1)).mean() if self.num_boxes else 0.0),
            "object_largest_side_px": _round(self.box_wh.max() if self.num_boxes else 0.0),
            "image_long_side_px": _percentiles(self.image_hw.max(axis=1), (0, 50, 100)),
            "per_class": {},
        }
        for cid in np.unique(self.box_class):
            sel = self.box_class == cid
            name = self.class_names.get(int(cid), str(int(cid)))
            out["per_class"][name] = {"instances": int(sel.sum()), "size_px": _percentiles(sides[sel], (10, 50, 90))}
        return out


def _round(value: float) -> float:
    return round(float(value), 1)


def _percentiles(values: np.ndarray, qs: tuple[int, ...]) -> dict[str, float]:
    names = {0: "min", 50: "median", 100: "max"}
    if len(values) == 0:
        return {names.get(q, f"p{q}"): 0.0 for q in qs}
    return {names.get(q, f"p{q}"): _round(np.percentile(values, q)) for q in qs}


def anchor_shapes(sizes_per_level: list[list[float]], aspect_ratios: list[float]) -> np.ndarray:
    """[A,2] (w, h) of every anchor of a generator: each size with each ratio h / w (torchvision's rule)."""
    sizes = np.array([s for level in sizes_per_level for s in level], dtype=np.float64)
    ratios = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
    w = (sizes[:, None] / ratios[None, :]).reshape(-1)
    h = (sizes[:, None] * ratios[None, :]).reshape(-1)
    return np.stack([w, h], axis=1)


def centred_iou(box_wh: np.ndarray, anchor_wh: np.ndarray) -> np.ndarray:
    """[N,A] IoU of each box with each anchor when both share one centre."""
    overlap = np.minimum(box_wh[:, None, :], anchor_wh[None, :, :])
    inter = overlap[..., 0] * overlap[..., 1]
    union = box_wh.prod(axis=1)[:, None] + anchor_wh.prod(axis=1)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def anchor_coverage(box_wh: np.ndarray, anchor_wh: np.ndarray, iou: float = COVERAGE_IOU) -> float:
    """Share of boxes whose best centred anchor reaches ``iou`` (1.0 when there are no boxes)."""
    if len(box_wh) == 0:
        return 1.0
    best = np.zeros(len(box_wh))
    for start in range(0, len(box_wh), 65536):  # bounded memory for millions of boxes
        best[start : start + 65536] = centred_iou(box_wh[start : start + 65536], anchor_wh).max(axis=1)
    return float((best >= iou).mean())


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """k sorted cluster centres of 1-d ``values`` (Lloyd's algorithm from quantile seeds: deterministic)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        groups = np.searchsorted(edges, values)
        updated = np.array([values[groups == i].mean() if (groups == i).any() else centres[i] for i in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


@dataclass
class AnchorFit:
    """Anchor sizes per level and shared aspect ratios fitted to boxes, with coverage before and after."""

    sizes_per_level: list[list[int]]
    aspect_ratios: list[float]
    coverage_before: float
    coverage_after: float


def fit_anchors(
    box_wh: np.ndarray,
    sizes_per_level: list[list[float]],
    aspect_ratios: list[float],
    target: float = COVERAGE_TARGET,
    max_per_level: int = 4,
    max_ratios: int = 5,
) -> AnchorFit:
    """Anchors of the same layout (levels, shared ratios) fitted to ``box_wh`` (at the network's input scale).

    Sizes: k-means on log sqrt(w h), sorted and handed out small-to-large, the same number per level, so the
    finest level gets the smallest; ratios: k-means on log(h / w). Counts grow from the recipe's (sizes per level
    up to ``max_per_level``, ratios up to ``max_ratios``), fewest anchors first, until ``target`` is covered.
    """
    levels = len(sizes_per_level)
    before = anchor_coverage(box_wh, anchor_shapes(sizes_per_level, aspect_ratios))
    if len(box_wh) == 0:
        return AnchorFit([[int(s) for s in lv] for lv in sizes_per_level], list(aspect_ratios), before, before)
    log_ratio = np.log(box_wh[:, 1] / box_wh[:, 0])
    log_side = np.log(np.sqrt(box_wh.prod(axis=1)))
    first_sizes, first_ratios = max(len(lv) for lv in sizes_per_level), len(aspect_ratios)
    layouts = [
        (k, r)
        for k in range(first_sizes, max(first_sizes, max_per_level) + 1)
        for r in range(first_ratios, max(first_ratios, max_ratios) + 1)
    ]
    best: AnchorFit | None = None
    for per_level, num_ratios in sorted(layouts, key=lambda kr: (kr[0] * kr[1], kr)):
        ratios = [round(float(r), 3) for r in np.exp(kmeans_1d(log_ratio, num_ratios))]
        centres = np.exp(kmeans_1d(log_side, levels * per_level))
        sizes = [[max(2, int(round(s))) for s in centres[i * per_level : (i + 1) * per_level]] for i in range(levels)]
        after = anchor_coverage(box_wh, anchor_shapes(sizes, ratios))
        if best is None or after > best.coverage_after:
            best = AnchorFit(sizes, ratios, before, after)
        if after >= target:
            break
    assert best is not None
    return best


def tile_size_for(mean_area: float, lo: int, hi: int, multiple: int = 32) -> int:
    """OTX's tile side for objects of ``mean_area`` px (they fill ~3% of it), a ``multiple``, within [lo, hi]."""
    side = np.sqrt(max(mean_area, 1.0) / TILE_OBJECT_SHARE)
    return int(np.clip(round(side / multiple) * multiple, lo, hi))


def tile_overlap_for(largest_side: float, tile: int) -> float:
    """Overlap (share of the tile) that holds the largest object whole in some tile, at most MAX_TILE_OVERLAP."""
    return round(float(np.clip(largest_side / max(tile, 1), 0.1, MAX_TILE_OVERLAP)), 2)
