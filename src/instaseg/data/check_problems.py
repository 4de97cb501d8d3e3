"""Finding every problem of a COCO split at once (the loader stops at the first type error; this reports them all).

Geometry is checked on flat numpy arrays so a million polygons take seconds: one Python pass pulls the fields
out of the annotation dicts, every test after that is vectorised, and Python touches only the flagged records.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from instaseg.data.coco import CocoData
from instaseg.errors import UserError
from instaseg.utils.images import image_size

ERROR, WARNING = "error", "warning"

# Errors break training or evaluation (a sample cannot be built, ids are ambiguous, masks do not fit the image);
# warnings are records training leaves out or handles, and leaks worth knowing about.
SEVERITY = {
    "no_categories": ERROR,
    "no_images": ERROR,
    "duplicate_category_id": ERROR,
    "duplicate_image_id": ERROR,
    "duplicate_annotation_id": ERROR,
    "invalid_image_size": ERROR,
    "image_path_escapes_root": ERROR,
    "missing_image": ERROR,
    "unreadable_image": ERROR,
    "image_size_mismatch": ERROR,
    "unknown_image": ERROR,
    "unknown_category": ERROR,
    "rle_size_mismatch": ERROR,
    "duplicate_category_name": WARNING,
    "duplicate_image_file": WARNING,
    "image_in_several_splits": WARNING,
    "class_without_train_instances": WARNING,
    "missing_bbox": WARNING,
    "zero_area_box": WARNING,
    "box_outside_image": WARNING,
    "polygon_too_few_points": WARNING,
    "polygon_odd_coordinates": WARNING,
    "zero_area_polygon": WARNING,
    "polygon_outside_image": WARNING,
    "empty_segmentation": WARNING,
}

# Boxes and polygons may overshoot the image by this many pixels (annotation tools round outward).
EDGE_TOLERANCE = 1.0


@dataclass
class Problems:
    """Collected problems; each kind keeps its exact count but lists at most ``max_listed`` records."""

    max_listed: int = 1000
    items: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(
        self,
        kind: str,
        message: str,
        split: str | None = None,
        file: str | None = None,
        image_id: Any = None,
        annotation_id: Any = None,
    ) -> None:
        self.counts[kind] += 1
        if self.counts[kind] > self.max_listed:
            return
        self.items.append(
            {
                "severity": SEVERITY[kind],
                "kind": kind,
                "message": message,
                "split": split,
                "file": file,
                "image_id": image_id,
                "annotation_id": annotation_id,
            }
        )

    @property
    def has_errors(self) -> bool:
        return any(SEVERITY[k] == ERROR for k, n in self.counts.items() if n)


def _duplicates(values: np.ndarray) -> np.ndarray:
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[counts > 1]


def check_categories(coco: CocoData, split: str, problems: Problems) -> None:
    src = str(coco.source) if coco.source else None
    if not coco.categories:
        problems.add("no_categories", "no categories declared", split, src)
    ids = np.array([c["id"] for c in coco.categories], dtype=np.int64)
    for cid in _duplicates(ids):
        problems.add("duplicate_category_id", f"category id {cid} is declared more than once", split, src)
    names = Counter(c["name"] for c in coco.categories)
    for name, n in names.items():
        if n > 1:
            problems.add("duplicate_category_name", f"category name {name!r} is declared {n} times", split, src)


@dataclass
class ImageTable:
    """Images of a split as arrays, in record order; ``paths`` is None where the path escapes the root."""

    ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    paths: list[str | None]
    readable: np.ndarray

    def lookup(self, image_ids: np.ndarray) -> np.ndarray:
        """Row of each image id, -1 where it is unknown; with duplicate ids the first record wins."""
        rows = np.full(len(image_ids), -1, np.int64)
        if len(self.ids):
            uniq, first = np.unique(self.ids, return_index=True)
            pos = np.minimum(np.searchsorted(uniq, image_ids), len(uniq) - 1)
            known = uniq[pos] == image_ids
            rows[known] = first[pos[known]]
        return rows


def check_images(coco: CocoData, split: str, problems: Problems, advance: Callable[[], None]) -> ImageTable:
    """Ids, json sizes, existence and header size of every image (headers only: full decodes cost too much)."""
    src = str(coco.source) if coco.source else None
    n = len(coco.images)
    if n == 0:
        problems.add("no_images", "the split has no images", split, src)
    ids = np.fromiter((im["id"] for im in coco.images), np.int64, n)
    widths = np.fromiter((im["width"] for im in coco.images), np.int64, n)
    heights = np.fromiter((im["height"] for im in coco.images), np.int64, n)
    for iid in _duplicates(ids):
        problems.add("duplicate_image_id", f"image id {iid} is used by more than one image", split, src, int(iid))
    paths: list[str | None] = []
    readable = np.zeros(n, bool)
    for i, image in enumerate(coco.images):
        paths.append(_image_file(coco, image, split, problems))
        if paths[-1] is not None:
            readable[i] = _check_image_file(paths[-1], image, split, problems)
        advance()
    for name, count in Counter(im["file_name"] for im in coco.images).items():
        if count > 1:
            problems.add("duplicate_image_file", f"{count} image records use this file", split, name)
    return ImageTable(ids, widths, heights, paths, readable)


def _image_file(coco: CocoData, image: dict, split: str, problems: Problems) -> str | None:
    if image["width"] <= 0 or image["height"] <= 0:
        msg = f"json size {image['width']}x{image['height']} is not positive"
        problems.add("invalid_image_size", msg, split, image["file_name"], image["id"])
    try:
        return str(coco.image_path(image))
    except UserError as e:
        problems.add("image_path_escapes_root", e.detail, split, image["file_name"], image["id"])
        return None


def _check_image_file(path: str, image: dict, split: str, problems: Problems) -> bool:
    if not os.path.isfile(path):
        problems.add("missing_image", "image file not found", split, path, image["id"])
        return False
    try:
        w, h = image_size(path)
    except UserError as e:
        problems.add("unreadable_image", e.detail, split, path, image["id"])
        return False
    jw, jh = image["width"], image["height"]
    if (w, h) != (jw, jh):
        hint = (
            " (its EXIF orientation turns it; annotations must be in the upright frame)" if (h, w) == (jw, jh) else ""
        )
        problems.add("image_size_mismatch", f"json says {jw}x{jh}, file is {w}x{h}{hint}", split, path, image["id"])
    return True


@dataclass
class AnnotationTable:
    """Annotation fields as arrays; ``image_rows`` indexes the ImageTable (-1 where the image is unknown)."""

    ids: np.ndarray
    image_ids: np.ndarray
    category_ids: np.ndarray
    crowd: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    image_rows: np.ndarray


def annotation_table(coco: CocoData, images: ImageTable) -> AnnotationTable:
    anns = coco.annotations
    n = len(anns)
    boxes = np.array([a.get("bbox") or (np.nan,) * 4 for a in anns], np.float64).reshape(n, 4)
    area = np.fromiter((_number(a.get("area")) for a in anns), np.float64, n)
    image_ids = np.fromiter((a["image_id"] for a in anns), np.int64, n)
    return AnnotationTable(
        ids=np.fromiter((a["id"] for a in anns), np.int64, n),
        image_ids=image_ids,
        category_ids=np.fromiter((a["category_id"] for a in anns), np.int64, n),
        crowd=np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, n),
        boxes=boxes,
        areas=area,
        image_rows=images.lookup(image_ids),
    )


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else np.nan


class _AnnotationReporter:
    """Adds problems for flagged annotation indices, naming the image file and both ids."""

    def __init__(self, coco: CocoData, table: AnnotationTable, images: ImageTable, split: str, problems: Problems):
        self.coco, self.table, self.images, self.split, self.problems = coco, table, images, split, problems

    def file_of(self, i: int) -> str | None:
        row = self.table.image_rows[i]
        if row < 0:
            return str(self.coco.source) if self.coco.source else None
        return self.images.paths[row] or self.coco.images[row]["file_name"]

    def __call__(self, kind: str, flagged: np.ndarray, message: Callable[[int], str]) -> None:
        for i in np.flatnonzero(flagged):
            i = int(i)
            t = self.table
            self.problems.add(kind, message(i), self.split, self.file_of(i), int(t.image_ids[i]), int(t.ids[i]))


def check_annotations(coco: CocoData, split: str, images: ImageTable, problems: Problems) -> AnnotationTable:
    """References, duplicate ids, boxes and segmentations; returns the table with polygon areas filled in."""
    t = annotation_table(coco, images)
    report = _AnnotationReporter(coco, t, images, split, problems)
    src = str(coco.source) if coco.source else None
    for aid in _duplicates(t.ids):
        problems.add(
            "duplicate_annotation_id", f"annotation id {aid} is used more than once", split, src, None, int(aid)
        )
    report("unknown_image", t.image_rows < 0, lambda i: f"image id {t.image_ids[i]} is not in 'images'")
    cat_ids = np.array([c["id"] for c in coco.categories], dtype=np.int64)
    unknown_cat = ~np.isin(t.category_ids, cat_ids)
    report("unknown_category", unknown_cat, lambda i: f"category id {t.category_ids[i]} is not in 'categories'")
    _check_boxes(t, images, report)
    polygon_area = _check_segmentations(coco, t, images, report)
    # COCO's size ranges use the json 'area' (what COCOeval reads); polygons or the box fill in where it is absent
    fallback = np.where(np.isnan(polygon_area), t.boxes[:, 2] * t.boxes[:, 3], polygon_area)
    t.areas = np.where(np.isnan(t.areas), fallback, t.areas)
    return t


def _image_wh(t: AnnotationTable, images: ImageTable) -> tuple[np.ndarray, np.ndarray]:
    """Json width/height of each annotation's image (NaN where the image is unknown)."""
    known = t.image_rows >= 0
    w, h = np.full(len(known), np.nan), np.full(len(known), np.nan)
    w[known], h[known] = images.widths[t.image_rows[known]], images.heights[t.image_rows[known]]
    return w, h


def _check_boxes(t: AnnotationTable, images: ImageTable, report: _AnnotationReporter) -> None:
    missing = np.isnan(t.boxes).any(axis=1)
    report("missing_bbox", missing, lambda i: "annotation has no 'bbox'")
    x, y, bw, bh = t.boxes.T
    with np.errstate(invalid="ignore"):
        zero = ~missing & ((bw <= 0) | (bh <= 0))
        report("zero_area_box", zero, lambda i: f"box {t.boxes[i].tolist()} has zero area")
        w, h = _image_wh(t, images)
        tol = EDGE_TOLERANCE
        outside = ~missing & ~zero & ((x < -tol) | (y < -tol) | (x + bw > w + tol) | (y + bh > h + tol))
    report("box_outside_image", outside, lambda i: f"box {t.boxes[i].tolist()} leaves the {w[i]:.0f}x{h[i]:.0f} image")


def _check_segmentations(
    coco: CocoData, t: AnnotationTable, images: ImageTable, report: _AnnotationReporter
) -> np.ndarray:
    """Polygon and RLE checks; returns each annotation's polygon area (NaN for RLE or missing)."""
    segs = [a.get("segmentation") for a in coco.annotations]
    n = len(segs)
    empty = np.fromiter((not s for s in segs), bool, n)
    report("empty_segmentation", empty, lambda i: "annotation has no segmentation")
    w, h = _image_wh(t, images)
    bad_rle = np.zeros(n, bool)
    for i, seg in enumerate(segs):
        if isinstance(seg, dict) and t.image_rows[i] >= 0:
            bad_rle[i] = list(seg.get("size", [])) != [h[i], w[i]]
    msg = "RLE size {} is not the image's [height, width] [{:.0f}, {:.0f}]"
    report("rle_size_mismatch", bad_rle, lambda i: msg.format(segs[i].get("size"), h[i], w[i]))
    poly_owner = [i for i, s in enumerate(segs) if isinstance(s, list) and s]
    return _check_polygons([segs[i] for i in poly_owner], np.array(poly_owner, np.int64), n, w, h, report)


def _check_polygons(
    polys: list[list], owners: np.ndarray, n: int, w: np.ndarray, h: np.ndarray, report: _AnnotationReporter
) -> np.ndarray:
    parts = list(chain.from_iterable(polys))
    part_owner = np.repeat(owners, np.fromiter(map(len, polys), np.int64, len(polys)))
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    coords = np.fromiter(chain.from_iterable(parts), np.float64, int(lengths.sum()))
    few, odd = lengths < 6, (lengths % 2 == 1) & (lengths >= 6)
    report("polygon_too_few_points", _any_per(part_owner, few, n), lambda i: "a polygon has fewer than 3 points")
    report("polygon_odd_coordinates", _any_per(part_owner, odd, n), lambda i: "a polygon has an odd number of values")
    # pycocotools ignores an odd polygon's last value, so such a polygon still counts with its whole points
    keep = np.repeat(~few, lengths)
    keep[(np.cumsum(lengths) - 1)[odd]] = False
    coords = coords[keep]
    owner, npts = part_owner[~few], lengths[~few] // 2
    no_valid = np.zeros(n, bool)
    no_valid[owners] = True
    no_valid[owner] = False
    report("empty_segmentation", no_valid, lambda i: "no polygon of the annotation has 3 points")
    xs, ys = coords[0::2], coords[1::2]
    pt_owner = np.repeat(owner, npts)
    tol = EDGE_TOLERANCE
    with np.errstate(invalid="ignore"):
        out_pt = (xs < -tol) | (ys < -tol) | (xs > w[pt_owner] + tol) | (ys > h[pt_owner] + tol)
    report("polygon_outside_image", _any_per(pt_owner, out_pt, n), lambda i: "polygon points lie outside the image")
    area = np.full(n, np.nan)
    if len(npts):
        area[np.unique(owner)] = 0.0
        np.add.at(area, owner, _shoelace(xs, ys, npts))
    report("zero_area_polygon", area == 0, lambda i: "the polygons enclose no area")
    return area


def _any_per(owner: np.ndarray, flags: np.ndarray, n: int) -> np.ndarray:
    """Per annotation: does any of its parts/points carry the flag."""
    out = np.zeros(n, bool)
    out[owner[flags]] = True
    return out


def _shoelace(xs: np.ndarray, ys: np.ndarray, npts: np.ndarray) -> np.ndarray:
    """Areas of many polygons stored end to end (npts points each), in one vectorised pass."""
    starts = np.concatenate([[0], np.cumsum(npts)[:-1]])
    nxt = np.arange(1, len(xs) + 1)
    nxt[np.cumsum(npts) - 1] = starts  # the last point of each polygon closes onto its first
    cross = xs * ys[nxt] - xs[nxt] * ys
    return np.abs(np.add.reduceat(cross, starts)) / 2.0
