"""Overlay pictures of predicted instances, meant for a person to look at.

Each class has a stable colour (hues spread by the golden ratio, so neighbouring class ids differ clearly) and
instances of one class are told apart by shade. Masks are translucent with an opaque contour; tags with class and
score are drawn last, on a filled background, and kept inside the image. Line widths and font size follow the
image size so that a 320 px thumbnail and a 4K photo both read well.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from instaseg.inference.postprocess import rle_to_crop

_GOLDEN = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def instance_color(class_index: int, shade: int = 0) -> tuple[int, int, int]:
    """RGB colour of the ``shade``-th instance of a class; shade 0 is the class's full colour."""
    step = (shade * _GOLDEN) % 1.0 if shade else 0.0
    # shades also lean the hue a little either way: brightness alone is hard to tell apart under a translucent mask
    hue = (0.12 + class_index * _GOLDEN + (0.08 * (step - 0.5) if shade else 0.0)) % 1.0
    saturation = 0.9 - 0.35 * step
    value = 1.0 - 0.4 * ((step * 2.0) % 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass
class Style:
    """Sizes derived from the image so drawings keep the same look at any resolution."""

    line: int
    font_scale: float
    font_thickness: int
    pad: int
    alpha: float = 0.45

    @classmethod
    def for_image(cls, height: int, width: int) -> Style:
        side = min(height, width)
        font_scale = float(np.clip(side / 1100.0, 0.4, 3.0))
        return cls(
            line=max(1, round(side / 400)),
            font_scale=font_scale,
            font_thickness=max(1, round(font_scale * 1.5)),
            pad=max(2, round(font_scale * 4)),
        )


def _decode_crop(rle: dict) -> tuple[np.ndarray, int, int]:
    """The mask inside its own bounding box, as (uint8 crop, x0, y0): the work stays box-sized, not image-sized."""
    counts = rle["counts"]
    coded = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(coded))
    if w == 0 or h == 0:
        return np.zeros((0, 0), np.uint8), 0, 0
    return rle_to_crop(rle, x, y, w, h).astype(np.uint8), x, y


def _draw_mask(canvas: np.ndarray, rle: dict, color: tuple[int, int, int], style: Style) -> None:
    crop, x0, y0 = _decode_crop(rle)
    if crop.size == 0:
        return
    h, w = crop.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    inside = crop.astype(bool)
    tint = np.array(color, dtype=np.float32)
    region[inside] = (region[inside] * (1.0 - style.alpha) + tint * style.alpha).astype(np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, color, style.line, cv2.LINE_AA, offset=(x0, y0))


def tag_rect(
    text: str, box: np.ndarray, height: int, width: int, style: Style
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Where a tag goes: at the box's top-left corner, above the box when there is room, else just inside it,
    shifted to stay inside the image. Returns ((x0, y0, x1, y1) inclusive, text origin)."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, style.font_scale, style.font_thickness)
    tag_w, tag_h = tw + 2 * style.pad, th + baseline + 2 * style.pad
    x0 = int(np.clip(box[0], 0, max(width - 1 - tag_w, 0)))
    top = int(box[1]) - tag_h
    y0 = top if top >= 0 else int(np.clip(box[1], 0, max(height - 1 - tag_h, 0)))
    return (x0, y0, x0 + tag_w, y0 + tag_h), (x0 + style.pad, y0 + style.pad + th)


def _draw_tag(
    canvas: np.ndarray, text: str, rect: tuple[int, ...], origin: tuple[int, int], color: tuple[int, ...], style: Style
) -> None:
    cv2.rectangle(canvas, rect[:2], rect[2:], color, thickness=-1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 150 else (255, 255, 255)
    cv2.putText(canvas, text, origin, _FONT, style.font_scale, ink, style.font_thickness, cv2.LINE_AA)


def _covered(rect: tuple[int, int, int, int], placed: np.ndarray) -> float:
    """Largest fraction of ``rect`` hidden by one already placed tag."""
    if len(placed) == 0:
        return 0.0
    iw = np.minimum(rect[2], placed[:, 2]) - np.maximum(rect[0], placed[:, 0])
    ih = np.minimum(rect[3], placed[:, 3]) - np.maximum(rect[1], placed[:, 1])
    overlap = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return float(overlap.max()) / max((rect[2] - rect[0]) * (rect[3] - rect[1]), 1)


def layout_tags(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: list[str],
    shape: tuple[int, ...],
    style: Style,
) -> list[tuple[int, str, tuple[int, int, int, int], tuple[int, int]]]:
    """(instance, text, rect, origin) of the tags to draw, best score first. A tag that better ones would hide
    by more than a sliver is left out, so crowded pictures keep readable tags (every instance keeps its mask)."""
    placed = np.zeros((0, 4))
    kept = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        index = int(labels[i]) - 1
        name = class_names[index] if 0 <= index < len(class_names) else f"class_{index}"
        text = f"{name} {float(scores[i]):.2f}"
        rect, origin = tag_rect(text, boxes[i], shape[0], shape[1], style)
        if _covered(rect, placed) > 0.15:
            continue
        placed = np.vstack([placed, rect])
        kept.append((int(i), text, rect, origin))
    return kept


def draw_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    rles: list[dict],
    class_names: list[str],
    show_boxes: bool = True,
) -> np.ndarray:
    """Draw instances on a copy of an HxWx3 uint8 RGB image; returns the overlay (RGB).

    Masks are decoded one at a time (never all at full size); large instances are drawn first so small ones stay
    visible on top, and all tags come last so no mask covers them.
    """
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    style = Style.for_image(*canvas.shape[:2])
    shades: dict[int, int] = {}
    colors = []
    for label in labels:  # shade counts instances per class in score order: stable for a given result
        shade = shades.get(int(label), 0)
        shades[int(label)] = shade + 1
        colors.append(instance_color(int(label) - 1, shade))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    for i in np.argsort(-areas, kind="stable"):
        if i < len(rles):
            _draw_mask(canvas, rles[i], colors[i], style)
        if show_boxes:
            p0 = (int(round(boxes[i, 0])), int(round(boxes[i, 1])))
            p1 = (int(round(boxes[i, 2])), int(round(boxes[i, 3])))
            cv2.rectangle(canvas, p0, p1, colors[i], max(1, style.line // 2), cv2.LINE_AA)
    for i, text, rect, origin in reversed(layout_tags(boxes, labels, scores, class_names, canvas.shape, style)):
        _draw_tag(canvas, text, rect, origin, colors[i], style)  # the best come last, on top
    return canvas
