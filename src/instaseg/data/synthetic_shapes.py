"""What both synthetic styles draw: the shape classes, their outlines, backgrounds and paint, and `SynthStyle`.

`instaseg.data.synthetic` (shapes at a share of the image) and `instaseg.data.synthetic_small` (hundreds of
few-pixel shapes on large images) differ in scale and bookkeeping only; sharing this module keeps their pictures
alike and lets the default style hand a small-object style over without the two importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from instaseg.errors import UserError

CLASSES = ("circle", "triangle", "square", "star", "ring")
MAX_INSTANCES = 8
RADIUS_RANGE = (0.08, 0.19)  # shape size (equal-area radius) as a fraction of the image side: no tiny objects
MIN_VISIBLE = 0.5  # an instance keeps at least this share of its own area visible
MIN_IN_FRAME = 0.75  # and at least this share of it lies inside the image
AREA_FACTOR = 0.85  # every shape's area is AREA_FACTOR * pi * radius**2
_SUBPIXEL = 4  # cv2 fixed-point bits: vertices placed at 1/16 pixel
BACKGROUNDS = ("textured", "plain")


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


def shape_outline(name: str, radius: float, rng: np.random.Generator) -> list[np.ndarray]:
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


def rasterise_at(outlines: list[np.ndarray], center: np.ndarray, angle: float, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage (float32 HxW in [0, 1]) of the outlines, holes cut out, in an array of ``shape`` (h, w),
    ``center`` in its pixels (a window of a larger image, or the whole image)."""
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


def draw_background(size: int, rng: np.random.Generator, style: str) -> np.ndarray:
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


def paint_shape(image: np.ndarray, coverage: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a shape into ``image`` in place: a random colour with a soft shading ramp, as lighting would vary it."""
    ys, xs = np.nonzero(coverage.any(axis=1))[0], np.nonzero(coverage.any(axis=0))[0]
    rows, cols = slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)  # only the shape's box: 10x less work
    alpha = coverage[rows, cols, None]
    shade = 1.0 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, alpha.shape[1], dtype=np.float32)[None, :, None]
    image[rows, cols] = image[rows, cols] * (1 - alpha) + _random_colour(rng) * shade * alpha
