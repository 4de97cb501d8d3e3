"""A procedurally generated shapes dataset in COCO layout: the built-in data for the demo and the tests.

Up to five shape classes (circle, triangle, square, star, ring) of varied size and rotation. The default style
puts them on textured backgrounds (gradients, stripes, blotchy noise, plus pixel noise and unlabelled line
clutter); the plain style (`SynthStyle(background="plain")`) on a flat dark grey with pixel noise only, which a
model trained from scratch on a CPU can learn in minutes (the demo's data). Colours and sizes are drawn
independently of the class (shapes of one size share one area), so a model has to learn shape. Shapes overlap:
a later shape hides what lies beneath, and the masks say so (each pixel belongs to at most one instance).
Placements that would hide most of an earlier shape, or leave most of a shape outside the frame, are retried,
and instances left with little visible area are dropped, so every annotation is recognisable.

Masks are stored as COCO RLE rather than polygons: an occluded shape can be non-convex, split in parts, or (a
ring) have a hole, and RLE holds exactly the pixels drawn, where polygons traced from the mask would lose holes
and shift edges. Everything derives from the seed (image ``i`` from ``(seed, i)``), so the same seed gives
byte-identical annotation files and images.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from instaseg.data.coco import CocoData, save_coco, split_file
from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox
from instaseg.data.synthetic_shapes import (
    AREA_FACTOR,
    CLASSES,
    MAX_INSTANCES,
    MIN_IN_FRAME,
    MIN_VISIBLE,
    RADIUS_RANGE,
    SynthStyle,
    draw_background,
    paint_shape,
    rasterise_at,
    shape_outline,
)
from instaseg.data.synthetic_small import synth_small_objects_image
from instaseg.data.writer import prepare_output_dir
from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_bytes
from instaseg.utils.progress import track

__all__ = [
    "CLASSES",
    "MAX_INSTANCES",
    "RADIUS_RANGE",
    "SynthStyle",
    "generate_synthetic",
    "small_objects_style",
    "synth_image",
]

SMALL_OBJECTS_PX = (6, 20)  # the small-object style: object sizes ...
SMALL_OBJECTS_IMAGE_PX = (1024, 2048)  # ... on large images
TRAIN_SHARE = 0.8  # the first 80% of a generated set is its train split, the rest val


def _rasterise(outlines: list[np.ndarray], center: np.ndarray, angle: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (float32 HxW in [0, 1]) of the outline, holes cut out."""
    return rasterise_at(outlines, center, angle, (size, size))


def _place(
    rng: np.random.Generator, size: int, num_classes: int, masks: list[np.ndarray], areas: list[int]
) -> tuple | None:
    """A random shape whose placement leaves every earlier instance mostly visible (None after 10 tries)."""
    name_idx = int(rng.integers(0, num_classes))
    radius = rng.uniform(*RADIUS_RANGE) * size
    outlines = shape_outline(CLASSES[name_idx], radius, rng)
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(10):
        center = rng.uniform(0.5 * radius, size - 0.5 * radius, 2)  # may poke a little out of the frame
        coverage = _rasterise(outlines, center, angle, size)
        mask = coverage >= 0.5
        if mask.sum() < MIN_IN_FRAME * AREA_FACTOR * np.pi * radius**2:  # the frame cuts off too much
            continue
        if all((m & ~mask).sum() >= MIN_VISIBLE * a for m, a in zip(masks, areas, strict=True)):
            return name_idx, coverage, mask
    return None


def synth_image(
    index: int, size: int, seed: int, style: SynthStyle = SynthStyle()
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of the dataset for ``seed``: (HxWx3 uint8 RGB, [(class index, visible uint8 mask)])."""
    if style.object_px is not None or style.image_px is not None:
        return synth_small_objects_image(index, size, seed, style)
    rng = np.random.default_rng([seed, index])
    image = draw_background(size, rng, style.background)
    masks: list[np.ndarray] = []
    areas: list[int] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, style.max_instances + 1))):
        placed = _place(rng, size, style.num_classes, masks, areas)
        if placed is None:
            continue
        cls, coverage, mask = placed
        paint_shape(image, coverage, rng)
        masks = [m & ~mask for m in masks]  # the new shape hides what lies beneath
        masks.append(mask)
        areas.append(int(mask.sum()))
        classes.append(cls)
    image += (rng.random(image.shape, dtype=np.float32) - 0.5) * 20  # sensor-like noise, std ~6 (uniform: fast)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    instances = [
        (c, m.astype(np.uint8)) for c, m, a in zip(classes, masks, areas, strict=True) if m.sum() >= MIN_VISIBLE * a
    ]
    return pixels, instances


def _annotation(ann_id: int, image_id: int, cls: int, mask: np.ndarray) -> dict:
    rle = mask_to_rle(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cls + 1,
        "segmentation": rle,
        "area": rle_area(rle),
        "bbox": rle_bbox(rle),
        "iscrowd": 0,
    }


def generate_synthetic(
    out: str | Path, num_images: int = 400, img_size: int = 256, seed: int = 0, style: SynthStyle = SynthStyle()
) -> Path:
    """Write the shapes dataset to ``out`` (``images/*.jpg``, ``annotations/instances_{train,val}.json``).

    The first 80% of the images (at least one) form ``train``, the rest ``val``. Returns ``out``.
    """
    if num_images < 2:
        raise UserError("need at least 2 images (one for train, one for val)", out)
    if img_size < 32:
        raise UserError("image size must be at least 32 pixels", out)
    style.validate(out)
    out = prepare_output_dir(out, [])
    images_dir = out / "images"
    names = CLASSES[: style.num_classes]
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(names)]
    n_train = min(max(1, round(num_images * TRAIN_SHARE)), num_images - 1)
    splits = {"train": ([], []), "val": ([], [])}
    ann_id = 1
    for index in track(range(num_images), "generating shapes", stderr=False):
        pixels, instances = synth_image(index, img_size, seed, style)
        image_id, file_name = index + 1, f"shapes_{index:05d}.jpg"
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {file_name}")
        atomic_write_bytes(images_dir / file_name, encoded.tobytes())
        images, anns = splits["train" if index < n_train else "val"]
        height, width = pixels.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for cls, mask in instances:
            anns.append(_annotation(ann_id, image_id, cls, mask))
            ann_id += 1
    info = {"description": "instaseg synthetic shapes", "seed": seed, "num_images": num_images, **asdict(style)}
    for split, (images, anns) in splits.items():
        data = CocoData(images, anns, categories, image_root=images_dir, info=info)
        save_coco(data, split_file(out, split))
    return out


def small_objects_style(
    num_classes: int = len(CLASSES), background: str = "textured", max_instances: int = 300
) -> SynthStyle:
    """Many 6-20 px objects on 1024-2048 px images: the data that needs dataset-aware sizes and tiling."""
    return SynthStyle(
        num_classes=num_classes,
        background=background,
        max_instances=max_instances,
        min_instances=max(1, max_instances // 3),
        object_px=SMALL_OBJECTS_PX,
        image_px=SMALL_OBJECTS_IMAGE_PX,
    )
