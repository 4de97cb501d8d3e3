"""Which class each object was taken for: a confusion matrix at IoU 0.5 with a background row and column.

Only detections scoring at least a threshold count (every detection a model keeps would bury the matrix in
low-score background): by default the one that maximises F1 over all classes, the operating point a user would
pick, else the caller's. Detections first take objects of their own class as COCO's matching does (the diagonal);
those left over take the best-overlapping object still unfound at IoU 0.5 whatever its class (a confusion). Rows
are the objects' classes and a last "background" row for detections of no object; columns the predicted classes and
a last "background" column for objects no detection found. Crowd regions count nowhere.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from instaseg.evaluation.matching import FOREGROUND_IOU, ImageOverlaps, Matching, match

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """``counts[row, column]``: rows the objects' classes then background, columns the predicted classes then
    background; ``names`` labels both (the last is "background")."""

    counts: np.ndarray
    names: list[str]
    score_threshold: float

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["ground truth \\ predicted", *self.names])
        writer.writerows([name, *row] for name, row in zip(self.names, self.counts.tolist(), strict=True))
        return buf.getvalue()


def best_f1_threshold(overlaps: list[ImageOverlaps], matchings: list[Matching]) -> float:
    """The score threshold at which F1 over all detections and objects (matched at `FOREGROUND_IOU`) peaks; 0.5
    when nothing is ever found. Matching is greedy by score, so a cut keeps exactly the matches above it."""
    scores, correct = [], []
    for image, matching in zip(overlaps, matchings, strict=True):
        counted = ~matching.ignored
        scores.append(image.det_score[counted])
        correct.append(matching.det_gt[counted] >= 0)
    num_gt = sum(len(image.gt_ids) for image in overlaps)
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    all_correct = np.concatenate(correct) if correct else np.zeros(0, dtype=bool)
    if num_gt == 0 or not all_correct.any():
        return 0.5
    order = np.argsort(-all_scores, kind="mergesort")
    ranked, hits = all_scores[order], np.cumsum(all_correct[order])
    last_of_score = np.r_[ranked[1:] != ranked[:-1], True]  # a cut keeps every detection of equal score
    f1 = 2 * hits / (np.arange(1, len(ranked) + 1) + num_gt)
    best = int(np.flatnonzero(last_of_score)[np.argmax(f1[last_of_score])])
    return float(ranked[best])


def confusion_matrix(
    overlaps: list[ImageOverlaps], class_names: dict[int, str], score_threshold: float, iou: float = FOREGROUND_IOU
) -> ConfusionMatrix:
    """The matrix of the detections scoring at least ``score_threshold`` (see the module doc)."""
    cat_ids = sorted(class_names)
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    counts = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    for image in overlaps:
        keep = image.det_score >= score_threshold
        matching = match(image, iou, keep)
        unfound = matching.gt_det < 0
        for d in np.flatnonzero(keep & ~matching.ignored):
            column = index[int(image.det_class[d])]
            if matching.det_gt[d] >= 0:
                counts[index[int(image.gt_class[matching.det_gt[d]])], column] += 1
                continue
            overlap = np.where(unfound, image.iou[d], -1.0)
            if overlap.size and overlap.max() >= iou:
                j = int(overlap.argmax())
                unfound[j] = False
                counts[index[int(image.gt_class[j])], column] += 1
            else:
                counts[bg, column] += 1
        for j in np.flatnonzero(unfound):
            counts[index[int(image.gt_class[j])], bg] += 1
    return ConfusionMatrix(counts, [class_names[c] for c in cat_ids] + [BACKGROUND], score_threshold)
