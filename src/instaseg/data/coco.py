"""The one in-memory dataset representation: COCO instances, plus where its images live.

Every format is converted to this; checking, splitting, training and evaluation read only this.
Loading validates field types and names the file and the record on the first problem; semantic problems
(unknown ids, duplicates, bad geometry) are left to `instaseg.data.check`, which reports all of them.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_json, read_json

SPLITS = ("train", "val", "test")
_NUMBER = (int, float)


@dataclass
class CocoData:
    """COCO instances data held in memory, with the folder its image ``file_name`` values are relative to."""

    images: list[dict]
    annotations: list[dict]
    categories: list[dict]
    image_root: Path
    source: Path | None = None
    info: dict = field(default_factory=dict)
    licenses: list = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.categories, key=lambda c: c["id"])]

    @property
    def category_ids(self) -> list[int]:
        return sorted(c["id"] for c in self.categories)

    def annotations_by_image(self) -> dict[int, list[dict]]:
        by_image: dict[int, list[dict]] = defaultdict(list)
        for ann in self.annotations:
            by_image[ann["image_id"]].append(ann)
        return by_image

    def image_path(self, image: dict) -> Path:
        return resolve_image_path(self.image_root, image["file_name"], self.source, image.get("id"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "licenses": self.licenses,
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def copy(self) -> CocoData:
        return copy.deepcopy(self)


def resolve_image_path(root: Path, file_name: str, source: Path | None = None, image_id: Any = None) -> Path:
    """``root / file_name``, refusing names that escape ``root`` (absolute paths, ``..``).

    The check is lexical (symlinks are not followed) so a dataset written with linked images stays loadable;
    it works on strings because it runs once per image and pathlib would cost seconds on 100k images.
    """
    root = os.path.abspath(root)
    candidate = os.path.abspath(os.path.join(root, file_name))
    if not candidate.startswith(os.path.join(root, "")):
        raise UserError(f"image path {file_name!r} escapes the dataset root {root}", source, f"image id {image_id}")
    return Path(candidate)


def _require(cond: bool, message: str, path: Path, record: str) -> None:
    if not cond:
        raise UserError(message, path, record)


def _validate(raw: Any, path: Path) -> None:
    _require(isinstance(raw, dict), "top level must be a json object", path, "file")
    for key in ("images", "annotations", "categories"):
        _require(isinstance(raw.get(key, []), list), f"'{key}' must be a list", path, key)
    for img in raw.get("images", []):
        rec = f"image id {img.get('id') if isinstance(img, dict) else '?'}"
        _require(isinstance(img, dict), "image entry must be an object", path, rec)
        _require(isinstance(img.get("id"), int), "image 'id' must be an integer", path, rec)
        _require(isinstance(img.get("file_name"), str), "image 'file_name' must be a string", path, rec)
        for key in ("width", "height"):
            _require(isinstance(img.get(key), int), f"image '{key}' must be an integer", path, rec)
    for cat in raw.get("categories", []):
        rec = f"category id {cat.get('id') if isinstance(cat, dict) else '?'}"
        _require(isinstance(cat, dict), "category entry must be an object", path, rec)
        _require(isinstance(cat.get("id"), int), "category 'id' must be an integer", path, rec)
        _require(isinstance(cat.get("name"), str), "category 'name' must be a string", path, rec)
    for ann in raw.get("annotations", []):
        rec = f"annotation id {ann.get('id') if isinstance(ann, dict) else '?'}"
        _require(isinstance(ann, dict), "annotation entry must be an object", path, rec)
        for key in ("id", "image_id", "category_id"):
            _require(isinstance(ann.get(key), int), f"annotation '{key}' must be an integer", path, rec)
        bbox = ann.get("bbox")
        _require(
            bbox is None or (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, _NUMBER) for v in bbox)),
            "annotation 'bbox' must be [x, y, w, h] numbers",
            path,
            rec,
        )
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            _require(
                all(isinstance(p, list) and all(isinstance(v, _NUMBER) for v in p) for p in seg),
                "polygon segmentation must be a list of number lists",
                path,
                rec,
            )
        else:
            _require(
                seg is None or (isinstance(seg, dict) and "counts" in seg and "size" in seg),
                "'segmentation' must be polygons or RLE {size, counts}",
                path,
                rec,
            )


def load_coco(annotation_file: str | Path, image_root: str | Path | None = None) -> CocoData:
    """Load a COCO instances json. ``image_root`` defaults to ``images/`` beside ``annotations/``."""
    path = Path(annotation_file)
    raw = read_json(path)
    _validate(raw, path)
    if image_root is None:
        image_root = default_image_root(path)
    return CocoData(
        images=raw.get("images", []),
        annotations=raw.get("annotations", []),
        categories=raw.get("categories", []),
        image_root=Path(image_root),
        source=path,
        info=raw.get("info") or {},
        licenses=raw.get("licenses") or [],
    )


def default_image_root(annotation_file: Path) -> Path:
    """COCO's layout: DATA/annotations/x.json with images in DATA/images/ (or the json's own folder)."""
    parent = annotation_file.resolve().parent
    if parent.name == "annotations" and (parent.parent / "images").is_dir():
        return parent.parent / "images"
    return parent


def dataset_root(path: str | Path) -> Path:
    """The dataset folder of a folder or annotation json (``DATA/annotations/x.json`` -> ``DATA``)."""
    path = Path(path).resolve()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "annotations" else path.parent


def save_coco(data: CocoData, annotation_file: str | Path) -> Path:
    return atomic_write_json(annotation_file, data.to_dict(), indent=None)


def find_split_files(root: str | Path) -> dict[str, Path]:
    """Annotation files of a dataset folder in the default layout: ``annotations/instances_{split}.json``."""
    root = Path(root)
    if not root.exists():
        raise UserError("dataset not found", root)
    if root.is_file():
        return {"train": root}
    found = {s: root / "annotations" / f"instances_{s}.json" for s in SPLITS}
    found = {s: p for s, p in found.items() if p.is_file()}
    if not found:
        raise UserError("no annotations/instances_{train,val,test}.json found", root)
    return found


def load_dataset(root: str | Path, image_root: str | Path | None = None) -> dict[str, CocoData]:
    """All splits of a dataset: a folder in the default layout, or one annotation json (taken as 'train')."""
    return {split: load_coco(p, image_root) for split, p in find_split_files(root).items()}
