"""The analysis' pictures (matplotlib, Agg): precision-recall curves per class, the confusion matrix, the error
breakdown, and an image's ground truth beside its predictions. Each is written atomically as a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.utils.io import atomic_write

# what each detection's verdict is drawn in (prediction panels) and called in the legend
VERDICT_COLORS = {
    "correct": "#2ca02c",
    "classification": "#d62728",
    "localization": "#ff7f0e",
    "both": "#9467bd",
    "duplicate": "#e377c2",
    "background": "#8c564b",
}
MISSED_COLOR = "#1f77b4"
_SHORT = {"classification": "cls", "localization": "loc", "duplicate": "dupe", "background": "bkg", "both": "both"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 90, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG and close it; ``tight`` crops to what is drawn (titles and labels included)."""
    plt = _pyplot()
    box = "tight" if tight else None
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=box))
    finally:
        plt.close(fig)


def plot_pr_curves(curves: dict[str, dict[float, tuple[np.ndarray, np.ndarray]]], title: str, path: Path) -> Path:
    """One panel per class: COCO's interpolated precision against recall at each IoU given (e.g. 0.5, 0.75).
    ``curves``: class name -> IoU -> (recall points, precision)."""
    plt = _pyplot()
    cols = min(5, max(1, len(curves)))
    rows = max(1, math.ceil(len(curves) / cols))
    size = (0.95 + 3.0 * cols, 1.35 + 2.7 * rows)  # panels of 3 x 2.7 inches plus the margins below
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, sharex=True, sharey=True)
    for ax, (name, by_iou) in zip(axes.flat, curves.items(), strict=False):
        for iou, (recall, precision) in sorted(by_iou.items()):
            ap = float(np.mean(precision)) if (precision > -1).all() else float("nan")
            ax.plot(recall, np.clip(precision, 0, 1), label=f"IoU {iou:.2f}: AP {ap:.3f}", lw=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    width, height = fig.get_figwidth(), fig.get_figheight()
    fig.suptitle(title, y=1 - 0.1 / height, va="top")
    # margins in inches: tight_layout (or a tight crop) over dozens of panels costs seconds
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.75 / height)
    fig.subplots_adjust(hspace=0.35, wspace=0.12)
    return save_figure(fig, path, tight=False)


def plot_confusion(counts: np.ndarray, names: list[str], title: str, path: Path, max_classes: int = 30) -> Path:
    """The matrix coloured by each row's share (what became of each class's objects), counts written in. With more
    than ``max_classes`` classes only those with any count are drawn (the CSV keeps them all)."""
    plt = _pyplot()
    if len(names) > max_classes:
        used = np.flatnonzero((counts.sum(axis=0) + counts.sum(axis=1)) > 0).tolist()
        used = sorted(set(used) | {len(names) - 1})  # background stays
        counts, names = counts[np.ix_(used, used)], [names[i] for i in used]
        title += f" ({len(used) - 1} classes with any count)"
    n = len(names)
    side = min(2.0 + 0.5 * n, 18.0)
    fig, ax = plt.subplots(figsize=(side + 0.5, side))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    font = 7 if n <= 30 else 5
    for (i, j), value in np.ndenumerate(counts):
        if value:
            color = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=font, color=color)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=font + 1)
    ax.set_yticks(range(n), names, fontsize=font + 1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title.replace(", ", ",\n", 1), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_errors(breakdowns: dict[str, dict], path: Path) -> Path:
    """Bars per error type: the AP50 its fix would add (left) and how many there are (right), per IoU type.
    ``breakdowns``: "mask"/"box" -> {"delta_ap50": {type: gain}, "counts": {type: n}}."""
    plt = _pyplot()
    types = list(next(iter(breakdowns.values()))["counts"])
    fig, (gain_ax, count_ax) = plt.subplots(1, 2, figsize=(10, 0.45 * len(types) + 1.6), sharey=True)
    height = 0.8 / len(breakdowns)
    y = np.arange(len(types))
    for k, (kind, breakdown) in enumerate(breakdowns.items()):
        offset = y + (k - (len(breakdowns) - 1) / 2) * height
        gain_ax.barh(offset, [breakdown["delta_ap50"][t] for t in types], height, label=kind)
        count_ax.barh(offset, [breakdown["counts"][t] for t in types], height, label=kind)
    gain_ax.set_yticks(y, types)
    gain_ax.invert_yaxis()
    gain_ax.set_xlabel("AP50 added if fixed")
    count_ax.set_xlabel("count")
    for ax in (gain_ax, count_ax):
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("errors in the manner of TIDE (foreground IoU 0.5, background 0.1)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _paint(canvas: np.ndarray, mask: np.ndarray, color: str) -> None:
    """Fill ``mask`` on an RGBA canvas in ``color`` (translucent) with a solid 2-pixel outline."""
    import cv2
    from matplotlib.colors import to_rgba

    rgba = np.asarray(to_rgba(color))
    canvas[mask] = rgba * [1, 1, 1, 0.35]
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(bool)
    canvas[mask & ~eroded] = rgba


def _draw_panel(ax: Any, shape: tuple[int, int], instances: list[tuple[dict, str, str, bool]]) -> None:
    """Instances (item, colour, tag, dashed) as one translucent overlay plus tags; dashed ones get a dashed box,
    box-only ones a box."""
    from matplotlib.patches import Rectangle

    canvas = np.zeros((*shape, 4))
    for item, color, text, dashed in instances:
        x, y, w, h = item["box"]
        if item["mask"] is not None and item["mask"].any():
            _paint(canvas, item["mask"], color)
        if dashed or item["mask"] is None:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, lw=1.4, ls="--" if dashed else "-"))
        if text:
            tag = {"facecolor": color, "pad": 1, "lw": 0}
            ax.text(x, y, text, fontsize=7, color="white", va="top", bbox=tag, clip_on=True)  # inside the box
    ax.imshow(canvas, interpolation="nearest")


def plot_image_review(image: np.ndarray, truths: list[dict], predictions: list[dict], title: str, path: Path) -> Path:
    """Ground truth (left) beside the predictions (right) of one image. Each instance: ``mask`` (HxW bool or None),
    ``box`` [x, y, w, h], ``text``; truths ``missed`` (blue, a dashed box), predictions ``verdict`` (its colour),
    drawn in the order given (the last on top)."""
    plt = _pyplot()
    h, w = image.shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(2 * min(7.0, 2 + w / 90), min(7.0, 2 + w / 90) * h / w + 0.6))
    for ax, label in zip(axes, ("ground truth", "prediction"), strict=True):
        ax.imshow(image)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    missed_color, found_color = MISSED_COLOR, VERDICT_COLORS["correct"]
    truths_drawn = [(t, missed_color if t["missed"] else found_color, t["text"], t["missed"]) for t in truths]
    _draw_panel(axes[0], (h, w), truths_drawn)
    preds_drawn = []
    for pred in predictions:
        verdict = pred["verdict"]
        text = pred["text"] if verdict == "correct" else f"{_SHORT.get(verdict, verdict)} {pred['text']}"
        preds_drawn.append((pred, VERDICT_COLORS.get(verdict, "gray"), text, False))
    _draw_panel(axes[1], (h, w), preds_drawn)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, tight=False)  # tight_layout fits it already; a crop would draw it twice
