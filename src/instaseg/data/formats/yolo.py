"""YOLO-seg <-> COCO.

YOLO-seg labels: one txt per image, a line per instance ``class x1 y1 x2 y2 ...`` with coordinates normalised
to [0, 1] by the image width and height (a line of 4 numbers is a box ``class cx cy w h``). Class names come
from ``data.yaml`` (``names`` as a list or an {index: name} dict), else ``classes.txt``, else ``--labels``.

Layouts read: ``images/{train,val,test}/`` + ``labels/{...}/`` (Ultralytics), flat ``images/`` + ``labels/``
(all train), and ``{train,valid,test}/images`` + ``{...}/labels`` (Roboflow exports). The label of
``images/a/b.jpg`` is ``labels/a/b.txt``; an image without one has no instances.

Export writes ``images/{split}/``, ``labels/{split}/`` and ``data.yaml``. A YOLO line holds one polygon, so an
instance of several parts (or a crowd RLE, turned into polygons of all its parts) is joined into one polygon by
zero-width bridges between nearest points: the instance stays one instance and keeps all its parts (and the
holes of RLE masks, since YOLO tools and pycocotools fill a ring even-odd).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from instaseg.data.formats.common import (
    DatasetBuilder,
    ImportedDataset,
    decoded_size,
    read_labels_file,
    split_of,
    track,
)
from instaseg.data.masks import mask_to_polygons, segmentation_to_mask
from instaseg.errors import UserError
from instaseg.utils.images import list_images
from instaseg.utils.io import atomic_write_text

_TOLERANCE = 0.01  # exporters round; coordinates a hair outside [0, 1] are clipped, further out is an error


def read_yolo(src: Path, labels_file: str | Path | None = None) -> ImportedDataset:
    """Read a YOLO-seg dataset folder into COCO splits (category id = class index + 1)."""
    names = _class_names(src, labels_file)
    category_of = {index: index + 1 for index in names}
    builder = DatasetBuilder(list(names.values()), list(category_of.values()))
    found = list(_find_images(src))
    for split, image, label, file_name in track(found, "reading YOLO labels"):
        size = decoded_size(image)
        image_id = builder.add_image(split, file_name, size, image, image)
        if label.is_file():
            for number, cls, polygon in _read_label_file(label, size):
                if cls not in category_of:
                    raise UserError(f"unknown class id {cls} (there are {len(names)} classes)", label, f"line {number}")
                builder.add_polygons(image_id, category_of[cls], [polygon])
        else:
            builder.warn("images have no label file (taken as having no instances)")
    return builder.build(src, "converted from YOLO-seg")


def _class_names(src: Path, labels_file: str | Path | None) -> dict[int, str]:
    if labels_file:
        return dict(enumerate(read_labels_file(labels_file)[0]))
    for path in (src / "data.yaml", src / "dataset.yaml"):
        if path.is_file():
            return _names_from_yaml(path)
    for path in (src / "classes.txt", src / "labels" / "classes.txt"):
        if path.is_file():
            return dict(enumerate(read_labels_file(path)[0]))
    raise UserError("no class names: expected data.yaml, classes.txt or --labels", src)


def _names_from_yaml(path: Path) -> dict[int, str]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"malformed yaml ({str(e).splitlines()[0]})", path) from None
    names = raw.get("names") if isinstance(raw, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise UserError("'names' must be a non-empty list or {index: name} mapping", path, "names")
    try:
        result = {int(k): v for k, v in names.items()}
    except (TypeError, ValueError):
        raise UserError("'names' keys must be class indices", path, "names") from None
    if not all(isinstance(v, str) for v in result.values()) or min(result) < 0:
        raise UserError("'names' must map non-negative indices to strings", path, "names")
    return dict(sorted(result.items()))


def _find_images(src: Path):
    """(split, image file, label file, file name in the new dataset) for every image, in sorted order."""
    roots = []
    if (src / "images").is_dir():
        roots.append((src / "images", src / "labels", None))
    else:
        for folder in sorted(p for p in src.iterdir() if (p / "images").is_dir()):
            roots.append((folder / "images", folder / "labels", split_of(f"{folder.name}/_")[0]))
    if not roots:
        raise UserError("expected an images/ + labels/ layout (or {train,val}/images + labels)", src)
    found = []
    for images_root, labels_root, split in roots:
        for image in list_images(images_root):
            rel = image.relative_to(images_root).as_posix()
            image_split = split or split_of(rel)[0]
            prefix = f"{images_root.parent.name}/" if split else ""
            found.append((image_split, image, (labels_root / rel).with_suffix(".txt"), prefix + rel))
    if not found:
        raise UserError("no images found", src)
    return found


def _read_label_file(path: Path, size: tuple[int, int]):
    """Yield (line number, class index, polygon in pixels) for each instance line of a YOLO label file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read label file: {e}", path) from None
    width, height = size
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = [math.nan]
        if not all(map(math.isfinite, values)):
            raise UserError("expected 'class x1 y1 x2 y2 ...' numbers", path, f"line {number}")
        cls, coords = values[0], values[1:]
        if not cls.is_integer():
            raise UserError(f"class id {line.split()[0]!r} is not an integer", path, f"line {number}")
        if len(coords) == 4:  # detection box cx cy w h
            cx, cy, w, h = coords
            coords = [cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2]
        if len(coords) < 6 or len(coords) % 2:
            raise UserError("a polygon needs 3 or more x y pairs", path, f"line {number}")
        if min(coords) < -_TOLERANCE or max(coords) > 1 + _TOLERANCE:
            raise UserError("coordinates must be normalised to [0, 1]", path, f"line {number}")
        xy = np.clip(np.asarray(coords).reshape(-1, 2), 0.0, 1.0) * [width, height]
        yield number, int(cls), xy.reshape(-1).tolist()


def write_yolo_dataset(dataset: ImportedDataset, out: Path, place: Callable[[Path | bytes, Path], None]) -> Path:
    """Write ``dataset`` as YOLO-seg under ``out``; ``place(source, dst)`` puts an image file in place."""
    first = next(iter(dataset.splits.values()))
    index = {cat_id: k for k, cat_id in enumerate(first.category_ids)}
    for split, data in dataset.splits.items():
        if data.category_ids != first.category_ids:
            raise UserError(f"split {split!r} has other categories than the first split", data.source)
        by_image = data.annotations_by_image()
        written: set[Path] = set()
        for image in track(data.images, f"writing YOLO {split}"):
            label = (out / "labels" / split / image["file_name"]).with_suffix(".txt")
            if label in written:
                raise UserError(f"two images share the label file {label.name}", data.source, f"image id {image['id']}")
            written.add(label)
            place(dataset.image_file(split, image), out / "images" / split / image["file_name"])
            lines = [_yolo_line(ann, image, index) for ann in by_image.get(image["id"], [])]
            atomic_write_text(label, "".join(line + "\n" for line in lines if line))
    names = dict(enumerate(first.class_names))
    config = {split: f"images/{split}" for split in dataset.splits} | {"nc": len(names), "names": names}
    atomic_write_text(out / "data.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return out


def _yolo_line(ann: dict, image: dict, index: dict[int, int]) -> str | None:
    width, height = image["width"], image["height"]
    seg = ann.get("segmentation")
    parts = [p for p in seg if len(p) >= 6] if isinstance(seg, list) else []
    if isinstance(seg, dict):
        parts = mask_to_polygons(segmentation_to_mask(seg, height, width), holes=True)
    if not parts and ann.get("bbox") and ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
        x, y, w, h = ann["bbox"]  # a mask too small to trace: keep the instance as its box
        parts = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if not parts or ann["category_id"] not in index:
        return None
    xy = join_parts([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts])
    xy = np.clip(xy / [width, height], 0.0, 1.0)
    return " ".join([str(index[ann["category_id"]])] + [f"{v:.6f}" for v in xy.reshape(-1)])


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Join polygon parts (each Nx2) into one ring through zero-width bridges between their nearest points.

    Each part is entered at its point nearest to the ring built so far, walked all the way round, and left
    back along the same bridge, so the joined ring covers the same area as the parts.
    """
    ring = parts[0]
    for part in parts[1:]:
        dist = ((ring[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        a, b = np.unravel_index(int(dist.argmin()), dist.shape)
        detour = np.concatenate([np.roll(part, -b, axis=0), part[b : b + 1], ring[a : a + 1]])
        ring = np.concatenate([ring[: a + 1], detour, ring[a + 1 :]])
    return ring
