"""Overlays: colours per class and shade, masks tinted where they are, tags inside the image, size-aware style."""

from __future__ import annotations

import itertools

import numpy as np

from instaseg.data.masks import mask_to_rle
from instaseg.inference.visualize import Style, draw_instances, instance_color, layout_tags, tag_rect


def test_colours_stable_distinct_and_shaded():
    assert instance_color(3) == instance_color(3) and instance_color(3, 2) == instance_color(3, 2)
    base = [np.array(instance_color(c), float) for c in range(10)]
    closest = min(np.abs(a - b).sum() for a, b in itertools.combinations(base, 2))
    assert closest > 60  # neighbouring class ids are easy to tell apart
    shades = [np.array(instance_color(0, s), float) for s in range(4)]
    assert min(np.abs(a - b).sum() for a, b in itertools.combinations(shades, 2)) > 20


def test_masks_tinted_and_outside_untouched():
    h, w = 100, 120
    image = np.full((h, w, 3), 128, np.uint8)
    mask = np.zeros((h, w), bool)
    mask[60:90, 20:50] = True
    boxes = np.array([[20, 60, 50, 90]], np.float32)
    out = draw_instances(image, boxes, np.array([1]), np.array([0.8]), [mask_to_rle(mask)], ["thing"])
    assert out.shape == image.shape and out.dtype == np.uint8 and (image == 128).all()  # input left as it was
    inner = out[70:80, 30:40].reshape(-1, 3).mean(axis=0)
    color = np.array(instance_color(0), float)
    assert np.abs(inner - (128 * 0.55 + color * 0.45)).max() < 3
    assert (out[5:40, 70:115] == 128).all()  # far from the instance: untouched
    assert not (out[40:60, 20:50] == 128).all()  # the tag sits above the box


def test_tags_stay_inside_the_image():
    for h, w in ((64, 64), (320, 240), (2160, 3840)):
        style = Style.for_image(h, w)
        for box in ([0, 0, 10, 10], [w - 3, h - 3, w, h], [-5, -5, w + 5, h + 5]):
            (x0, y0, x1, y1), _ = tag_rect("long_class_name 0.99", np.array(box, float), h, w, style)
            assert x0 >= 0 and y0 >= 0 and y1 <= h - 1
            assert x1 <= w - 1 or x0 == 0  # only a tag wider than the image itself is cut


def test_style_scales_with_image_size():
    small, large = Style.for_image(240, 320), Style.for_image(2160, 3840)
    assert small.font_scale < large.font_scale and small.line < large.line
    assert small.font_scale >= 0.35 and small.line >= 1  # still legible on a thumbnail


def test_crowded_tags_do_not_pile_up():
    """Many overlapping instances: masks for all, but one readable tag per spot, the best score's, on top."""
    h, w, n = 120, 160, 40
    mask = np.zeros((h, w), bool)
    mask[50:70, 60:90] = True
    boxes = np.tile(np.array([[60, 50, 90, 70]], np.float32), (n, 1))
    boxes[-2] = [5, 100, 20, 115]  # one instance elsewhere keeps its tag
    scores = np.linspace(0.5, 0.99, n)
    labels = np.ones(n, np.int64)
    style = Style.for_image(h, w)
    tags = layout_tags(boxes, labels, scores, ["x"], (h, w), style)
    assert [t[0] for t in tags] == [n - 1, n - 2]
    out = draw_instances(np.zeros((h, w, 3), np.uint8), boxes, labels, scores, [mask_to_rle(mask)] * n, ["x"])
    x0, y0 = tags[0][2][:2]
    assert tuple(out[y0 + 1, x0 + 1]) == instance_color(0, n - 1)  # the best tag's background
