"""Accuracy of a predictor on a COCO split, and instance-by-instance agreement of two predictors' results.

Used by the backend chooser (`instaseg.deploy.autobackend`), the export tests and `bench/vs_torchvision.py`: an
exported model is judged by what users get from it (the shared predictor's Results), never by raw graph outputs
alone. The predictor is passed in, so evaluation needs nothing of inference's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instaseg.errors import UserError
from instaseg.evaluation.coco import CocoEvaluator


def validation_subset(val_data: str | Path, max_images: int | None = None) -> Any:
    """The validation split of a dataset root (or one annotation file; test or train when it has no val split),
    cut to ``max_images`` evenly spread images that hold objects (an image without objects says nothing about
    mask AP)."""
    from instaseg.data.coco import load_dataset

    splits = load_dataset(val_data)
    gt = splits.get("val") or splits.get("test") or splits["train"]
    annotated = {a["image_id"] for a in gt.annotations}
    images = [im for im in gt.images if im["id"] in annotated]
    if not images:
        raise UserError("the validation split has no annotated images to measure accuracy on", val_data)
    count = len(images) if max_images is None else min(max_images, len(images))
    picks = np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))
    return image_subset(gt, [images[i] for i in picks])


def image_subset(gt: Any, images: list[dict]) -> Any:
    """A copy of ``gt`` (CocoData) holding only ``images`` and their annotations."""
    subset = gt.copy()
    subset.images = list(images)
    keep = {im["id"] for im in subset.images}
    subset.annotations = [a for a in gt.annotations if a["image_id"] in keep]
    return subset


def predictor_metrics(predictor: Any, gt: Any, max_dets: int = 100, batch_size: int = 1) -> dict:
    """COCO box and mask metrics of ``predictor`` (threshold as set on it) on every image of ``gt`` (CocoData)."""
    evaluator = CocoEvaluator(gt, max_dets, category_ids=predictor.category_ids)
    paths = [gt.image_path(record) for record in gt.images]
    for record, result in zip(gt.images, predictor.predict(paths, batch_size=batch_size), strict=True):
        prediction = {"boxes": result.boxes, "labels": result.labels, "scores": result.scores, "masks": result.rles}
        evaluator.add(record["id"], prediction)
    return evaluator.compute()


@dataclass
class Agreement:
    """How two results of one image agree: per matched instance, the largest box-corner gap and the mask IoU."""

    matched: int
    unmatched: int  # instances of either result, above the score margin, with no partner
    max_box_gap: float
    min_mask_iou: float


def _to_bytes(rles: list[dict]) -> list[dict]:
    return [
        {"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}
        for r in rles
    ]


def compare_results(a: Any, b: Any, min_score: float, margin: float = 0.05) -> Agreement:
    """Match instances of ``a`` and ``b`` (Results of one image) by label and box IoU.

    Every instance scoring at least ``min_score + margin`` in one result must have a partner among the other's
    instances scoring at least ``min_score - margin``: the margin keeps instances whose score sits at the cut,
    where a rounding difference decides, from counting as missing.
    """
    gaps, ious, unmatched, matched = [], [], 0, 0
    for first, second in ((a, b), (b, a)):
        keep = np.flatnonzero(second.scores >= min_score - margin)
        boxes_iou = mask_utils.iou(
            first.boxes.astype(np.float64).tolist(), second.boxes[keep].astype(np.float64).tolist(), [0] * len(keep)
        )
        masks_iou = mask_utils.iou(_to_bytes(first.rles), _to_bytes([second.rles[k] for k in keep]), [0] * len(keep))
        for i in np.flatnonzero(first.scores >= min_score + margin):
            same = [j for j in range(len(keep)) if second.labels[keep[j]] == first.labels[i]]
            if not same or len(keep) == 0:
                unmatched += 1
                continue
            j = max(same, key=lambda c: boxes_iou[i][c])
            if boxes_iou[i][j] < 0.5:
                unmatched += 1
                continue
            matched += first is a
            gaps.append(float(np.abs(first.boxes[i] - second.boxes[keep[j]]).max()))
            both_empty = mask_utils.area(_to_bytes([first.rles[i], second.rles[keep[j]]])).max() == 0
            ious.append(1.0 if both_empty else float(masks_iou[i][j]))
    return Agreement(matched, unmatched, max(gaps, default=0.0), min(ious, default=1.0))
