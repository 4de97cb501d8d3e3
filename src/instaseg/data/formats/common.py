"""Pieces every format reader shares: the COCO builder, labels files, label-map PNGs, safe paths, splits.

Readers only parse their format; the builder owns ids, categories, bbox/area and counted warnings, so every
format produces COCO the same way.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from instaseg.data.coco import SPLITS, CocoData
from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox, segmentation_to_rle
from instaseg.errors import UserError
from instaseg.utils.images import read_image
from instaseg.utils.progress import track  # noqa: F401  (re-exported for the format readers)

log = logging.getLogger("instaseg.data.formats")

IGNORE_LABEL = "__ignore__"  # LabelMe / labelme2coco: regions to leave out of the instances
BACKGROUND_LABEL = "_background_"  # labelme2coco: class 0, never an instance
T = TypeVar("T")


@dataclass
class ImportedDataset:
    """Splits of a converted dataset plus where each image's pixels come from (a file, or embedded bytes)."""

    splits: dict[str, CocoData]
    sources: dict[tuple[str, int], Path | bytes] = field(default_factory=dict)

    def image_file(self, split: str, image: dict) -> Path | bytes:
        found = self.sources.get((split, image["id"]))
        return found if found is not None else self.splits[split].image_path(image)


class DatasetBuilder:
    """Collects images and instances into COCO splits with unique ids across splits.

    With ``class_names`` the vocabulary is fixed (unknown names are errors); without, names are collected and
    numbered in sorted order at ``build()`` so the result does not depend on file order.
    """

    def __init__(self, class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None):
        self.fixed = class_names is not None
        names = list(class_names or [])
        ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
        self._cat_ids: dict[str, int] = dict(zip(names, ids, strict=True))
        self._images: dict[str, list[dict]] = {}
        self._annotations: dict[str, list[dict]] = {}
        self._image_split: dict[int, str] = {}
        self._file_names: dict[str, Path | str] = {}
        self.sources: dict[tuple[str, int], Path | bytes] = {}
        self.warnings: Counter[str] = Counter()
        self._next_annotation_id = 1

    def category_id(self, name: str, path: Path, record: str) -> int:
        if name not in self._cat_ids:
            if self.fixed:
                raise UserError(f"unknown class {name!r} (not in the class list)", path, record)
            self._cat_ids[name] = -len(self._cat_ids) - 1  # provisional; renumbered in build()
        return self._cat_ids[name]

    def add_image(self, split: str, file_name: str, size: tuple[int, int], source: Path | bytes, origin: Path) -> int:
        """Register an image; ``size`` is (width, height) upright; ``origin`` names the file for errors."""
        if file_name in self._file_names:
            raise UserError(f"image {file_name!r} is already used by {self._file_names[file_name]}", origin)
        self._file_names[file_name] = origin
        image_id = len(self._image_split) + 1
        self._image_split[image_id] = split
        width, height = size
        image = {"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)}
        self._images.setdefault(split, []).append(image)
        self._annotations.setdefault(split, [])
        self.sources[(split, image_id)] = source
        return image_id

    def _find_image(self, image_id: int) -> dict:
        images = self._images[self._image_split[image_id]]
        # images are appended in id order within a split, so the newest is almost always the one asked for
        return images[-1] if images[-1]["id"] == image_id else next(i for i in images if i["id"] == image_id)

    def _append(self, image_id: int, category_id: int, segmentation, rle: dict, bbox: list, iscrowd: int) -> None:
        annotations = self._annotations[self._image_split[image_id]]
        annotations.append(
            {
                "id": self._next_annotation_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": rle_area(rle),
                "bbox": [round(v, 2) for v in bbox],
                "iscrowd": int(iscrowd),
            }
        )
        self._next_annotation_id += 1

    def add_polygons(self, image_id: int, category_id: int, polygons: list[list[float]], iscrowd: int = 0) -> bool:
        """Add one instance made of polygon parts; parts with < 3 points are dropped (counted). False if none left."""
        parts = [[round(float(v), 2) for v in p] for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
        if len(parts) < len(polygons):
            self.warnings["polygon parts with fewer than 3 points were dropped"] += len(polygons) - len(parts)
        if not parts:
            return False
        image = self._find_image(image_id)
        rle = segmentation_to_rle(parts, image["height"], image["width"])
        xs = [v for p in parts for v in p[0::2]]
        ys = [v for p in parts for v in p[1::2]]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        self._append(image_id, category_id, parts, rle, bbox, iscrowd)
        return True

    def add_mask(self, image_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0) -> bool:
        """Add one instance from a binary mask, stored as compressed RLE (exact: keeps holes and every part)."""
        if not mask.any():
            return False
        rle = mask_to_rle(mask)
        self._append(image_id, category_id, rle, rle, rle_bbox(rle), iscrowd)
        return True

    def warn(self, message: str, count: int = 1) -> None:
        self.warnings[message] += count

    def _categories(self) -> tuple[list[dict], dict[int, int]]:
        if self.fixed:
            cats = [{"id": i, "name": n, "supercategory": ""} for n, i in self._cat_ids.items()]
            return sorted(cats, key=lambda c: c["id"]), {}
        names = sorted(self._cat_ids)
        remap = {self._cat_ids[n]: k for k, n in enumerate(names, start=1)}
        return [{"id": k, "name": n, "supercategory": ""} for k, n in enumerate(names, start=1)], remap

    def build(self, root: Path, description: str) -> ImportedDataset:
        """The COCO splits (image records relative to ``root``); logs each counted warning once."""
        if not self._image_split:
            raise UserError("no images found", root)
        categories, remap = self._categories()
        splits = {}
        for split in sorted(self._images, key=_split_order):
            annotations = self._annotations[split]
            for ann in annotations:
                ann["category_id"] = remap.get(ann["category_id"], ann["category_id"])
            splits[split] = CocoData(
                images=self._images[split],
                annotations=annotations,
                categories=[dict(c) for c in categories],
                image_root=root,
                info={"description": description},
            )
        for message, count in sorted(self.warnings.items()):
            log.warning("%s: %d %s", root, count, message)
        return ImportedDataset(splits=splits, sources=dict(self.sources))


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def read_labels_file(path: str | Path) -> tuple[list[str], bool]:
    """Class names from a labels file (one per line, labelme2coco style) -> (names in order, has __ignore__).

    ``__ignore__`` and ``_background_`` lines are special (ignored regions, class 0) and are not classes.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("labels file not found", path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read labels file: {e}", path) from None
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name in (IGNORE_LABEL, BACKGROUND_LABEL):
            continue
        if name in names:
            raise UserError(f"class {name!r} is listed twice", path, f"line {number}")
        names.append(name)
    if not names:
        raise UserError("labels file lists no classes", path)
    return names, IGNORE_LABEL in (line.strip() for line in lines)


def decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image, decoding it fully so truncated files are caught here."""
    height, width = read_image(path).shape[:2]
    return width, height


def embedded_image(data: bytes, origin: Path, record: str) -> tuple[tuple[int, int], str]:
    """Validate embedded image bytes -> ((width, height) upright, file extension)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = (img.format or "PNG").lower()
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"embedded image is corrupt ({e})", origin, record) from None
    ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    return ((h, w) if orientation in (5, 6, 7, 8) else (w, h)), ext


def read_label_map(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label-map PNG (palette, 8- or 16-bit single channel) as an HxW integer array of raw values.

    Palette indices are the values (VOC's convention); an RGB label map is refused because its colours
    carry no instance ids. ``size`` (width, height) is checked when given.
    """
    if not path.is_file():
        raise UserError("label map not found", path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                raise UserError(f"label map must be a palette or single-channel PNG, not mode {img.mode}", path)
            values = np.asarray(img).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt or unreadable label map ({e})", path) from None
    if size is not None and (values.shape[1], values.shape[0]) != tuple(size):
        got = f"{values.shape[1]}x{values.shape[0]}"
        raise UserError(f"label map is {got} but its image is {size[0]}x{size[1]}", path)
    return values


def relative_inside(root: Path, target: Path, origin: Path, record: str) -> str:
    """``target`` as a posix path relative to ``root``, refusing anything that escapes it.

    The check is lexical (no symlink resolution) so folders of symlinked images stay usable, while names
    written in annotation files (``../../x.jpg``, absolute paths) cannot reach outside the dataset.
    """
    rel = os.path.relpath(os.path.normpath(os.path.abspath(target)), os.path.normpath(os.path.abspath(root)))
    if rel == os.curdir or rel.startswith(os.pardir) or os.path.isabs(rel):
        raise UserError(f"image path {str(target)!r} escapes the dataset root {root}", origin, record)
    return PurePosixPath(Path(rel)).as_posix()


def split_of(rel: str, default: str = "train") -> tuple[str, str]:
    """Split named by the first folder of a relative path (``val/a.jpg`` -> ("val", "a.jpg")), else default."""
    first, _, rest = rel.partition("/")
    name = {"valid": "val", "validation": "val"}.get(first, first)
    if rest and name in SPLITS:
        return name, rest
    return default, rel


def label_regions(label_map: np.ndarray, skip: Sequence[int] = (0,)) -> Iterator[tuple[int, np.ndarray]]:
    """(value, binary mask) for each value present in a label map, in increasing order, except ``skip``."""
    for value in np.unique(label_map):
        if int(value) not in skip:
            yield int(value), label_map == value
