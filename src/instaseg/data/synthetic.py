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

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from rich.progress import track

from instaseg.data.coco import CocoData, save_coco, split_file
from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox
from instaseg.data.writer import prepare_output_dir
from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_bytes

CLASSES = ("circle", "triangle", "square", "star", "ring")
MAX_INSTANCES = 8
RADIUS_RANGE = (0.08, 0.19)  # shape size (equal-area radius) as a fraction of the image side: no tiny objects
MIN_VISIBLE = 0.5  # an instance keeps at least this share of its own area visible
MIN_IN_FRAME = 0.75  # and at least this share of it lies inside the image
AREA_FACTOR = 0.85  # every shape's area is AREA_FACTOR * pi * radius**2
_SUBPIXEL = 4  # cv2 fixed-point bits: vertices placed at 1/16 pixel


BACKGROUNDS = ("textured", "plain")
SMALL_OBJECTS_PX = (6, 20)  # the small-object style: object sizes ...
SMALL_OBJECTS_IMAGE_PX = (1024, 2048)  # ... on large images


@dataclass(frozen=True)
class SynthStyle:
    """How hard the data are: how many of CLASSES (the first ``num_classes``), which background, how crowded.

    ``object_px`` (lo, hi): objects of a fixed pixel size range (equal-area diameter) instead of a share of the
    image, and ``image_px`` (lo, hi): each image's side drawn from this range instead of the dataset's one size;
    with ``min_instances``, what `SMALL_OBJECTS` sets: many small objects on large images (aerial, microscopy).
    """

    num_classes: int = len(CLASSES)
    background: str = "textured"
    max_instances: int = MAX_INSTANCES
    min_instances: int = 1
    object_px: tuple[int, int] | None = None
    image_px: tuple[int, int] | None = None

    def validate(self, out: str | Path | None = None) -> None:
        if not 1 <= self.num_classes <= len(CLASSES):
            raise UserError(f"the number of classes must be 1 to {len(CLASSES)}, got {self.num_classes}", out)
        if self.background not in BACKGROUNDS:
            raise UserError(f"background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}", out)
        if not 1 <= self.min_instances <= self.max_instances:
            why = f"instances per image must satisfy 1 <= min <= max, got {self.min_instances}, {self.max_instances}"
            raise UserError(why, out)
        for name, pair, least in (("object_px", self.object_px, 3), ("image_px", self.image_px, 32)):
            if pair is not None and not (len(pair) == 2 and least <= pair[0] <= pair[1]):
                raise UserError(f"{name} must be (lo, hi) with {least} <= lo <= hi, got {pair!r}", out)


def _regular_polygon(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius


def _shape_outline(name: str, radius: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Closed outlines (float x, y about the origin, unrotated); a second outline is a hole.

    Every shape of a given ``radius`` has the same area, AREA_FACTOR * pi * radius**2, so size does not tell the
    class either (a star of the same circumradius as a circle would have a third of its area).
    """
    area = AREA_FACTOR * np.pi * radius**2
    if name == "circle":
        return [_regular_polygon(64, np.sqrt(area / np.pi))]
    if name == "triangle":  # equilateral: area = (3 sqrt(3) / 4) R^2
        return [_regular_polygon(3, np.sqrt(area / (3 * np.sqrt(3) / 4)))]
    if name == "square":
        aspect = rng.uniform(1.0, 1.4)  # squares to mildly oblong rectangles
        half = np.sqrt(area / 4) * np.array([aspect, 1 / aspect]) ** 0.5
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half]
    if name == "star":  # five points, inner radius 0.45 R: area = 5 * 0.45 * sin(36 deg) R^2
        outer_r = np.sqrt(area / (5 * 0.45 * np.sin(np.pi / 5)))
        outer = _regular_polygon(5, outer_r)
        inner = _regular_polygon(5, outer_r * 0.45, phase=np.pi / 5)
        return [np.stack([outer, inner], axis=1).reshape(-1, 2)]
    if name == "ring":  # area = pi R^2 (1 - hole^2)
        hole = rng.uniform(0.45, 0.6)
        outer_r = np.sqrt(area / (np.pi * (1 - hole**2)))
        return [_regular_polygon(64, outer_r), _regular_polygon(64, outer_r * hole)]
    raise ValueError(f"unknown shape {name!r}")


def _rasterise(outlines: list[np.ndarray], center: np.ndarray, angle: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (float32 HxW in [0, 1]) of the outline, holes cut out."""
    return _rasterise_at(outlines, center, angle, (size, size))


def _rasterise_at(outlines: list[np.ndarray], center: np.ndarray, angle: float, shape: tuple[int, int]) -> np.ndarray:
    """`_rasterise` into an array of ``shape`` (h, w), ``center`` in its pixels: a window of a larger image."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    coverage = np.zeros(shape, dtype=np.uint8)
    for k, outline in enumerate(outlines):
        pts = np.round((outline @ rot.T + center) * (1 << _SUBPIXEL)).astype(np.int32)
        # the first outline is the shape, later ones are holes painted back to zero
        cv2.fillPoly(coverage, [pts], 255 if k == 0 else 0, lineType=cv2.LINE_AA, shift=_SUBPIXEL)
    return coverage.astype(np.float32) / 255.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(70, 256)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(size: int, rng: np.random.Generator, style: str) -> np.ndarray:
    """A float32 RGB background: plain dark grey, or textured (gradient, stripes or blotches, then line clutter)."""
    if style == "plain":  # dark, so every shape colour (HSV value >= 70) stands out from it
        return np.full((size, size, 3), rng.uniform(30, 80), dtype=np.float32)
    ramp = np.arange(size, dtype=np.float32) / size
    theta = rng.uniform(0, np.pi)
    along = ramp[None, :] * np.float32(np.cos(theta)) + ramp[:, None] * np.float32(np.sin(theta))
    a, b = _random_colour(rng), _random_colour(rng)
    kind = rng.integers(0, 3)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / (np.ptp(along) or 1.0)
    elif kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along * rng.uniform(3, 12) + rng.uniform(0, 2 * np.pi))
    else:  # low-frequency blotches
        t = cv2.resize(rng.random((6, 6), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = a + np.clip(t, 0, 1)[..., None] * (b - a) * rng.uniform(0.3, 1.0)
    for _ in range(rng.integers(0, 4)):  # unlabelled line clutter: edges that are not objects
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        colour = tuple(float(c) for c in _random_colour(rng))
        cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, int(rng.integers(1, 4)))
    return image


def _place(
    rng: np.random.Generator, size: int, num_classes: int, masks: list[np.ndarray], areas: list[int]
) -> tuple | None:
    """A random shape whose placement leaves every earlier instance mostly visible (None after 10 tries)."""
    name_idx = int(rng.integers(0, num_classes))
    radius = rng.uniform(*RADIUS_RANGE) * size
    outlines = _shape_outline(CLASSES[name_idx], radius, rng)
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


def _paint(image: np.ndarray, coverage: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a shape into ``image`` in place: a random colour with a soft shading ramp, as lighting would vary it."""
    ys, xs = np.nonzero(coverage.any(axis=1))[0], np.nonzero(coverage.any(axis=0))[0]
    rows, cols = slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)  # only the shape's box: 10x less work
    alpha = coverage[rows, cols, None]
    shade = 1.0 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, alpha.shape[1], dtype=np.float32)[None, :, None]
    image[rows, cols] = image[rows, cols] * (1 - alpha) + _random_colour(rng) * shade * alpha


def synth_image(
    index: int, size: int, seed: int, style: SynthStyle = SynthStyle()
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Image ``index`` of the dataset for ``seed``: (HxWx3 uint8 RGB, [(class index, visible uint8 mask)])."""
    if style.object_px is not None or style.image_px is not None:
        from instaseg.data.synthetic_small import synth_small_objects_image

        return synth_small_objects_image(index, size, seed, style)
    rng = np.random.default_rng([seed, index])
    image = _background(size, rng, style.background)
    masks: list[np.ndarray] = []
    areas: list[int] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, style.max_instances + 1))):
        placed = _place(rng, size, style.num_classes, masks, areas)
        if placed is None:
            continue
        cls, coverage, mask = placed
        _paint(image, coverage, rng)
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
    n_train = min(max(1, round(num_images * 0.8)), num_images - 1)
    splits = {"train": ([], []), "val": ([], [])}
    ann_id = 1
    for index in track(range(num_images), description="generating shapes", transient=True):
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
