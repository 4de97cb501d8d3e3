"""Pascal VOC segmentation -> COCO.

Reads ``SegmentationObject/*.png`` (palette index k = instance k) with ``SegmentationClass/*.png`` (palette
index = class, 1..20 in VOC's order) and ``JPEGImages/``; 255 marks void/boundary pixels, which belong to no
instance. ``ImageSets/Segmentation/{train,val}.txt`` give the splits when present (else everything is train).
``SRC`` may be the VOC20xx folder itself or a folder holding exactly one (``VOCdevkit/VOC2012``).

Masks are stored as compressed RLE: it is exact (polygons would lose holes, e.g. a bicycle's wheels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instaseg.data.formats.common import (
    DatasetBuilder,
    ImportedDataset,
    decoded_size,
    label_regions,
    read_label_map,
    read_labels_file,
    track,
)
from instaseg.errors import UserError
from instaseg.utils.images import IMAGE_EXTENSIONS

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOID = 255


def read_voc(src: Path, labels_file: str | Path | None = None) -> ImportedDataset:
    """Read a VOC segmentation folder; ``labels_file`` replaces the 20 VOC names (class index k = line k)."""
    root = _voc_root(src)
    names = read_labels_file(labels_file)[0] if labels_file else list(VOC_CLASSES)
    builder = DatasetBuilder(names)
    for split, stem in track(_split_stems(root, builder), "reading VOC masks"):
        image = _image_file(root, stem)
        size = decoded_size(image)
        image_id = builder.add_image(split, image.name, size, image, image)
        class_png = root / "SegmentationClass" / f"{stem}.png"
        objects = read_label_map(root / "SegmentationObject" / f"{stem}.png", size)
        classes = read_label_map(class_png, size)
        for value, mask in label_regions(objects, skip=(0, VOID)):
            category_id = _instance_class(classes[mask], len(names), class_png, f"instance {value}")
            if category_id is None:
                builder.warn("instances without class pixels skipped")
                continue
            builder.add_mask(image_id, category_id, mask)
    return builder.build(root / "JPEGImages", "converted from Pascal VOC")


def _voc_root(src: Path) -> Path:
    if (src / "SegmentationObject").is_dir():
        return src
    found = [*src.glob("*/SegmentationObject"), *src.glob("*/*/SegmentationObject")]
    candidates = sorted(p.parent for p in found if p.is_dir())
    if len(candidates) != 1:
        raise UserError("expected one VOC folder with SegmentationObject/, SegmentationClass/, JPEGImages/", src)
    return candidates[0]


def _split_stems(root: Path, builder: DatasetBuilder) -> list[tuple[str, str]]:
    """(split, image stem) pairs from ImageSets/Segmentation, else every SegmentationObject PNG as train."""
    annotated = sorted(p.stem for p in (root / "SegmentationObject").glob("*.png"))
    if not annotated:
        raise UserError("no masks found", root / "SegmentationObject")
    lists = {s: root / "ImageSets" / "Segmentation" / f"{s}.txt" for s in ("train", "val")}
    lists = {s: p for s, p in lists.items() if p.is_file()}
    if not lists:
        return [("train", stem) for stem in annotated]
    pairs = []
    for split, path in lists.items():
        try:
            stems = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read split list: {e}", path) from None
        pairs += [(split, stem) for stem in stems]
    unlisted = len(set(annotated) - {stem for _, stem in pairs})
    if unlisted:
        builder.warn("masks not listed in ImageSets/Segmentation skipped", unlisted)
    return pairs


def _image_file(root: Path, stem: str) -> Path:
    for ext in (".jpg", *IMAGE_EXTENSIONS):
        path = root / "JPEGImages" / f"{stem}{ext}"
        if path.is_file():
            return path
    raise UserError("image not found", root / "JPEGImages" / f"{stem}.jpg")


def _instance_class(class_values: np.ndarray, num_classes: int, path: Path, record: str) -> int | None:
    """The class covering most of an instance's pixels (void and background pixels do not vote)."""
    votes = class_values[(class_values != 0) & (class_values != VOID)]
    if votes.size == 0:
        return None
    category_id = int(np.bincount(votes).argmax())
    if category_id > num_classes:
        raise UserError(f"class index {category_id} is beyond the {num_classes} classes", path, record)
    return category_id
