"""Why detections fail, in the manner of TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object
Detection Errors", ECCV 2020), and how much AP50 each kind of error costs.

Every detection COCO's matching at IoU 0.5 leaves unmatched (`instaseg.evaluation.matching`) gets the first type
that fits, in TIDE's order, from its IoUs with the image's objects (foreground 0.5, background 0.1):

- localization: its best IoU with an object of its own class is in [0.1, 0.5];
- classification: it overlaps an object of another class by 0.5 or more;
- duplicate: it overlaps by 0.5 or more an object of its class already found by a higher-scoring detection;
- background: it overlaps no object by more than 0.1;
- both: anything else (a wrong class and a loose outline at once).

An object no detection found is missed unless a classification or localization error aimed at it (it was nearly
found). The AP each would add if fixed is TIDE's oracle, one type at a time, from the same detections: a
classification or localization error becomes a correct detection of its object (the highest-scoring one aimed at
each object not already found; the others are dropped), duplicates, background and "both" errors are dropped, and a
missed object leaves the ground truth. AP here is COCO's AP50, averaged over the classes that have ground truth;
fixing never lowers it by more than COCO's binning, so gains are reported from 0 as TIDE does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from instaseg.evaluation.matching import FOREGROUND_IOU, ImageOverlaps, Matching, interpolated_ap

BACKGROUND_IOU = 0.1
ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
_FIXED_BY_MATCHING = ("classification", "localization")  # these become correct detections when fixed


@dataclass
class _Detection:
    """A detection as AP sees it: class, COCO's order (image, rank), score, and what happened to it."""

    cls: int
    order: tuple[int, int]
    score: float
    correct: bool
    error: str | None = None
    target: tuple[int, int] | None = None  # (image, object) a classification or localization error aimed at
    target_class: int | None = None


@dataclass
class ErrorBreakdown:
    """Counts and AP50 gains per error type, overall and per class, and every detection's verdict per image."""

    counts: dict[str, int]
    class_counts: dict[int, dict[str, int]]
    ap50: float
    class_ap50: dict[int, float]
    delta_ap50: dict[str, float]
    verdicts: dict[int, list[str]] = field(default_factory=dict)  # image id -> per detection: "correct",
    # "ignored" (a crowd region) or its error type, in the order of its `ImageOverlaps`
    missed: dict[int, list[int]] = field(default_factory=dict)  # image id -> indices of its missed objects


def classify(
    overlaps: ImageOverlaps, d: int, found: np.ndarray, fg: float = FOREGROUND_IOU, bg: float = BACKGROUND_IOU
) -> tuple[str, int | None]:
    """The error type of unmatched detection ``d`` and the object it concerns (see the module doc)."""
    iou = overlaps.iou[d]
    if iou.size == 0:
        return "background", None
    same = overlaps.gt_class == overlaps.det_class[d]
    own = np.where(same, iou, 0.0)
    j = int(own.argmax())
    if bg <= own[j] <= fg:
        return "localization", j
    other = np.where(same, 0.0, iou)
    j = int(other.argmax())
    if other[j] >= fg:
        return "classification", j
    taken = np.where(same & found, iou, 0.0)
    j = int(taken.argmax())
    if taken[j] >= fg:
        return "duplicate", j
    if iou.max() <= bg:
        return "background", None
    return "both", None


def error_breakdown(
    overlaps: list[ImageOverlaps],
    matchings: list[Matching],
    category_ids: list[int],
    fg: float = FOREGROUND_IOU,
    bg: float = BACKGROUND_IOU,
) -> ErrorBreakdown:
    """TIDE's breakdown of all detections of ``overlaps`` (COCO's image order) matched by ``matchings`` at ``fg``."""
    detections: list[_Detection] = []
    num_gt = dict.fromkeys(category_ids, 0)
    best: dict[tuple[int, int], int] = {}  # object -> the highest-scoring detection aimed at it, while unfound
    verdicts: dict[int, list[str]] = {}
    missed_objects: list[tuple[int, int, int]] = []  # (image rank, object, class)
    for rank, (image, matching) in enumerate(zip(overlaps, matchings, strict=True)):
        for cls in image.gt_class:
            num_gt[int(cls)] = num_gt.get(int(cls), 0) + 1
        found = matching.gt_det >= 0
        verdict = verdicts.setdefault(image.image_id, [])
        for d in range(len(image.detections)):
            if matching.ignored[d]:
                verdict.append("ignored")
                continue
            correct = bool(matching.det_gt[d] >= 0)
            det = _Detection(int(image.det_class[d]), (rank, d), float(image.det_score[d]), correct)
            if not det.correct:
                det.error, j = classify(image, d, found, fg, bg)
                if det.error in _FIXED_BY_MATCHING and not found[j]:
                    det.target, det.target_class = (rank, j), int(image.gt_class[j])
                    best.setdefault(det.target, len(detections))  # in score order: the first is the best
            verdict.append(det.error or "correct")
            detections.append(det)
        aimed = {j for (r, j) in best if r == rank}
        missed_objects += [(rank, j, int(image.gt_class[j])) for j in np.flatnonzero(~found) if j not in aimed]
    classes = [c for c in category_ids if num_gt.get(c, 0) > 0]
    ap50, class_ap = _mean_ap(_points(detections, best, None), num_gt, classes)
    delta = {}
    for error in ERROR_TYPES:
        fewer = dict(num_gt)
        if error == "missed":
            for _, _, cls in missed_objects:
                fewer[cls] -= 1
        fixed_ap, _ = _mean_ap(_points(detections, best, error), fewer, classes)
        delta[error] = max(fixed_ap - ap50, 0.0)
    return ErrorBreakdown(
        counts=_counts(detections, missed_objects, None),
        class_counts={c: _counts(detections, missed_objects, c) for c in category_ids},
        ap50=ap50,
        class_ap50=class_ap,
        delta_ap50=delta,
        verdicts=verdicts,
        missed={img.image_id: [j for r, j, _ in missed_objects if r == rank] for rank, img in enumerate(overlaps)},
    )


def _points(detections: list[_Detection], best: dict, fixing: str | None) -> list[tuple[int, tuple, float, bool]]:
    """(class, order, score, correct) of every detection AP counts, with the errors of type ``fixing`` fixed."""
    points = []
    for index, det in enumerate(detections):
        if det.error is None or det.error != fixing:
            points.append((det.cls, det.order, det.score, det.correct))
        elif det.error in _FIXED_BY_MATCHING and det.target is not None and best[det.target] == index:
            cls = det.target_class if det.error == "classification" else det.cls
            points.append((cls, det.order, det.score, True))
        # any other fixed error is dropped
    return points


def _mean_ap(points: list, num_gt: dict[int, int], classes: list[int]) -> tuple[float, dict[int, float]]:
    """Mean AP50 over ``classes`` (a class whose every object was fixed away has nothing to find: AP 0)."""
    by_class: dict[int, list] = {c: [] for c in classes}
    for cls, order, score, correct in points:
        if cls in by_class:
            by_class[cls].append((order, score, correct))
    aps = {}
    for cls, items in by_class.items():
        items.sort(key=lambda item: item[0])  # COCO's order before its stable sort by score
        scores = np.array([s for _, s, _ in items], dtype=np.float64)
        correct = np.array([c for _, _, c in items], dtype=bool)
        aps[cls] = max(interpolated_ap(scores, correct, num_gt[cls])[0], 0.0)
    return (float(np.mean(list(aps.values()))) if aps else 0.0), aps


def _counts(detections: list[_Detection], missed: list[tuple[int, int, int]], cls: int | None) -> dict[str, int]:
    counts = dict.fromkeys(ERROR_TYPES, 0)
    for det in detections:
        if det.error is not None and (cls is None or det.cls == cls):
            counts[det.error] += 1
    counts["missed"] = sum(1 for _, _, c in missed if cls is None or c == cls)
    return counts
