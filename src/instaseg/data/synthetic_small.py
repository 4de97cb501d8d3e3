"""The small-object synthetic style: hundreds of shapes of a few pixels on large images (see `SynthStyle`).

The shapes, colours, backgrounds and occlusion rules are those of `instaseg.data.synthetic` (drawn by
`instaseg.data.synthetic_shapes`); what differs is
the scale, and so the bookkeeping. An image-sized coverage array per placement try, as the default style uses,
would cost hundreds of full-image passes per picture here; instead each shape is rasterised in its own window
and an owner map (which instance each pixel shows) answers "how much of each earlier shape would this hide"
from the window alone. Masks are made one at a time, when the caller asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from instaseg.data.synthetic_shapes import (
    AREA_FACTOR,
    CLASSES,
    MIN_IN_FRAME,
    MIN_VISIBLE,
    RADIUS_RANGE,
    SynthStyle,
    draw_background,
    paint_shape,
    rasterise_at,
    shape_outline,
)


class LazyMasks:
    """[(class index, visible uint8 mask)], each full-size mask made only while it is being used."""

    def __init__(
        self, owner: np.ndarray, classes: list[int], windows: list[tuple[int, int, int, int]], keep: list[int]
    ):
        self._owner, self._classes, self._windows, self._keep = owner, classes, windows, keep

    def __len__(self) -> int:
        return len(self._keep)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for k in self._keep:
            x0, y0, x1, y1 = self._windows[k]
            mask = np.zeros(self._owner.shape, dtype=np.uint8)
            mask[y0:y1, x0:x1] = self._owner[y0:y1, x0:x1] == k + 1
            yield self._classes[k], mask


def _place_small(
    rng: np.random.Generator, side: int, style: SynthStyle, owner: np.ndarray, areas: list[int], visible: list[int]
) -> tuple | None:
    """A shape placed in its own window, hiding no earlier shape below MIN_VISIBLE (None after 10 tries)."""
    name_idx = int(rng.integers(0, style.num_classes))
    share = RADIUS_RANGE if style.object_px is None else (style.object_px[0] / 2 / side, style.object_px[1] / 2 / side)
    lo, hi = 2 * share[0] * side, 2 * share[1] * side
    radius = rng.uniform(lo, hi) / 2
    outlines = shape_outline(CLASSES[name_idx], radius, rng)
    angle = rng.uniform(0, 2 * np.pi)
    reach = int(np.ceil(max(np.abs(o).max() for o in outlines) * np.sqrt(2))) + 2
    for _ in range(10):
        center = rng.uniform(0.5 * radius, side - 0.5 * radius, 2)
        x0, y0 = max(int(center[0]) - reach, 0), max(int(center[1]) - reach, 0)
        x1, y1 = min(int(center[0]) + reach + 1, side), min(int(center[1]) + reach + 1, side)
        coverage = rasterise_at(outlines, center - (x0, y0), angle, (y1 - y0, x1 - x0))
        mask = coverage >= 0.5
        if mask.sum() < MIN_IN_FRAME * AREA_FACTOR * np.pi * radius**2:
            continue
        hidden = np.bincount(owner[y0:y1, x0:x1][mask], minlength=len(areas) + 1)[1:]
        if all(visible[k] - hidden[k] >= MIN_VISIBLE * areas[k] for k in np.flatnonzero(hidden)):
            return name_idx, coverage, mask, (x0, y0, x1, y1), hidden
    return None


def synth_small_objects_image(
    index: int, size: int, seed: int, style: SynthStyle
) -> tuple[np.ndarray, LazyMasks]:
    """Image ``index`` for ``seed`` in a style with ``object_px`` / ``image_px``: (HxWx3 uint8, lazy masks)."""
    rng = np.random.default_rng([seed, index])
    side = int(rng.integers(style.image_px[0], style.image_px[1] + 1)) if style.image_px else size
    image = draw_background(side, rng, style.background)
    owner = np.zeros((side, side), dtype=np.int32)  # 0: background; k: instance k - 1 shows here
    areas: list[int] = []
    visible: list[int] = []
    classes: list[int] = []
    windows: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(style.min_instances, style.max_instances + 1))):
        placed = _place_small(rng, side, style, owner, areas, visible)
        if placed is None:
            continue
        cls, coverage, mask, (x0, y0, x1, y1), hidden = placed
        paint_shape(image[y0:y1, x0:x1], coverage, rng)
        for k in np.flatnonzero(hidden):
            visible[k] -= int(hidden[k])
        owner[y0:y1, x0:x1][mask] = len(areas) + 1
        areas.append(int(mask.sum()))
        visible.append(int(mask.sum()))
        classes.append(cls)
        windows.append((x0, y0, x1, y1))
    image += (rng.random(image.shape, dtype=np.float32) - 0.5) * 20
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    keep = [k for k in range(len(areas)) if visible[k] >= MIN_VISIBLE * areas[k] and visible[k] > 0]
    return pixels, LazyMasks(owner, classes, windows, keep)
