"""Pictures for the dataset check: the class histogram (matplotlib, Agg) and sample images with masks (cv2)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from instaseg.data.coco import CocoData
from instaseg.data.masks import segmentation_to_mask
from instaseg.errors import UserError
from instaseg.utils.images import read_image
from instaseg.utils.io import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    from instaseg.data.check_problems import AnnotationTable, ImageTable

# Beyond this many classes the histogram shows the most frequent ones (all counts stay in check_result.json).
MAX_HISTOGRAM_CLASSES = 150
_SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def draw_histogram(per_class: dict[str, dict[str, int]], path: Path) -> Path:
    """Horizontal grouped bars (one row per class, one bar per split): class names stay legible at any count."""
    splits = sorted({s for counts in per_class.values() for s in counts}, key=["train", "val", "test"].index)
    names = sorted(per_class, key=lambda n: (-sum(per_class[n].values()), n))
    shown = names[:MAX_HISTOGRAM_CLASSES]
    fig = Figure(figsize=(9, 1.5 + 0.28 * max(len(shown), 1) * max(len(splits), 1) ** 0.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / max(len(splits), 1)
    y = np.arange(len(shown))
    for k, split in enumerate(splits):
        counts = [per_class[n].get(split, 0) for n in shown]
        ax.barh(y + k * height, counts, height=height, label=split, color=_SPLIT_COLORS.get(split))
    ax.set_yticks(y + height * (len(splits) - 1) / 2, shown, fontsize=8)
    ax.margins(y=0.5 / max(len(shown), 1))
    ax.invert_yaxis()  # most frequent class on top
    ax.set_xlabel("instances")
    ax.grid(axis="x", alpha=0.3)
    hidden = len(names) - len(shown)
    title = "instances per class" + (
        f" ({len(shown)} most frequent; {hidden} more in check_result.json)" if hidden else ""
    )
    ax.set_title(title)
    if splits:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def draw_samples(
    splits: dict[str, CocoData], tables: dict[str, tuple[ImageTable, AnnotationTable]], folder: Path, per_split: int
) -> dict[str, list[Path]]:
    """A few readable, annotated images of each split, spread evenly over the split, with their masks drawn."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*_sample_*.jpg"):  # a previous run's pictures would mislead
        stale.unlink()
    written: dict[str, list[Path]] = {}
    for split, coco in splits.items():
        images, anns = tables[split]
        by_image = coco.annotations_by_image()
        candidates = [r for r in np.flatnonzero(images.readable) if by_image.get(int(images.ids[r]))]
        spread = np.linspace(0, len(candidates) - 1, per_split).round() if candidates and per_split > 0 else []
        picks = sorted({candidates[int(i)] for i in spread})
        written[split] = []
        for k, row in enumerate(picks):
            image = coco.images[row]
            picture = _draw_image(images.paths[row], by_image[image["id"]], coco)
            if picture is None:
                continue
            ok, jpg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
            path = folder / f"{split}_sample_{k}_{image['id']}.jpg"
            written[split].append(atomic_write_bytes(path, jpg.tobytes()))
    return written


def _draw_image(path: str, annotations: list[dict], coco: CocoData) -> np.ndarray | None:
    """BGR picture: translucent masks, their contours and class labels (crowd regions marked as such)."""
    try:
        rgb = read_image(path)
    except UserError:  # a header that reads but pixels that do not: already visible in the report's counts
        return None
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    names = {c["id"]: c["name"] for c in coco.categories}
    order = {cid: k for k, cid in enumerate(sorted(names))}
    h, w = canvas.shape[:2]
    overlay, labels = canvas.copy(), []
    for ann in annotations:
        mask = _mask_of(ann, h, w)
        if mask is None:
            continue
        color = _color(order.get(ann["category_id"], -1))
        overlay[mask > 0] = color
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        labels.append(
            (contours, color, names.get(ann["category_id"], "?") + (" (crowd)" if ann.get("iscrowd") else ""))
        )
    canvas = cv2.addWeighted(overlay, 0.45, canvas, 0.55, 0)
    for contours, color, _ in labels:
        cv2.drawContours(canvas, contours, -1, color, 2 if max(h, w) > 400 else 1)
    for contours, color, text in labels:
        if contours:
            x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
            _put_label(canvas, text, x, y, color)
    return canvas


def _mask_of(ann: dict, h: int, w: int) -> np.ndarray | None:
    seg = ann.get("segmentation")
    if not seg:
        return None
    try:
        mask = segmentation_to_mask(seg, h, w)
    except (ValueError, TypeError, KeyError):  # malformed geometry is reported elsewhere; skip drawing it
        return None
    return mask if mask.shape == (h, w) and mask.any() else None


def _put_label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    scale = max(0.4, min(canvas.shape[:2]) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, th + base)
    cv2.rectangle(canvas, (x, y - th - base), (x + tw, y), color, -1)
    cv2.putText(canvas, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _color(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR color per class (golden-ratio hue steps)."""
    hue = int((index * 0.618033988749895 % 1.0) * 179)
    hsv = np.array([[[hue, 200, 230]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
