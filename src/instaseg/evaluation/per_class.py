"""Per-class numbers read off an accumulated COCO evaluation: AP, AP50, AP75, AR and each size's AP and AR.

They are the summary's own numbers taken one class at a time (area ranges all/small/medium/large, the largest
maxDets), so the mean of a column over the classes that have ground truth is the summary's number. -1, as in
COCO's summary, means the class has no ground truth (of that size).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# the per-class numbers, in table order; the index of each size in COCO's area ranges
CLASS_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl")
_SIZES = {"s": 1, "m": 2, "l": 3}


def _mean(values: np.ndarray) -> float:
    valid = values > -1
    return float(values[valid].mean()) if valid.any() else -1.0


def _threshold_index(ev: Any, iou: float) -> int:
    return int(np.flatnonzero(np.isclose(ev.params.iouThrs, iou))[0])


def class_stats(ev: Any) -> dict[int, dict[str, float]]:
    """`CLASS_STATS` for every category id of an evaluated, accumulated COCOeval."""
    precision = ev.eval["precision"]  # [IoU thresholds, recall thresholds, classes, areas, maxDets]
    recall = ev.eval["recall"]  # [IoU thresholds, classes, areas, maxDets]
    t50, t75 = _threshold_index(ev, 0.5), _threshold_index(ev, 0.75)
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p, r = precision[:, :, k, :, -1], recall[:, k, :, -1]
        stats = {"AP": _mean(p[:, :, 0]), "AP50": _mean(p[t50, :, 0]), "AP75": _mean(p[t75, :, 0])}
        stats |= {f"AP{size}": _mean(p[:, :, a]) for size, a in _SIZES.items()}
        stats["AR"] = _mean(r[:, 0])
        stats |= {f"AR{size}": _mean(r[:, a]) for size, a in _SIZES.items()}
        out[int(cat_id)] = stats
    return out


def precision_recall(ev: Any, cat_id: int, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO's interpolated precision at its 101 recall points for one class at IoU ``iou`` (area all, the largest
    maxDets); precision past the highest recall reached is 0, and all -1 where the class has no ground truth."""
    k = list(ev.params.catIds).index(cat_id)
    return np.asarray(ev.params.recThrs), ev.eval["precision"][_threshold_index(ev, iou), :, k, 0, -1]


def instance_counts(gt_dataset: dict) -> dict[int, int]:
    """Ground-truth objects per category id, crowd regions left out (they are never to be found)."""
    counts = {int(c["id"]): 0 for c in gt_dataset["categories"]}
    for ann in gt_dataset["annotations"]:
        if not ann.get("iscrowd", 0) and ann["category_id"] in counts:
            counts[ann["category_id"]] += 1
    return counts
