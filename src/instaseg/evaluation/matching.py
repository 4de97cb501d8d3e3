"""Detections against ground truth image by image: every IoU, and COCO's matching at one IoU threshold.

The analysis (error types, confusion matrix, worst images) starts here. The matching is COCO's at area "all":
detections in score order (a stable sort) take the unmatched ground truth of their class with the highest IoU at
or above the threshold; one left unmatched that covers a crowd region of its class is ignored; each image and class
keeps its ``max_dets`` best detections. So the AP50 computed from it (`interpolated_ap`) is COCO's AP50, class by
class, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from instaseg.evaluation.coco import box_of
from instaseg.evaluation.mask_scoring import ground_truth_rles

FOREGROUND_IOU = 0.5  # a detection overlapping its object this much finds it (COCO's AP50, TIDE's foreground)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds


@dataclass
class ImageOverlaps:
    """One image's detections (by score, highest first) and ground truth, with their IoUs."""

    image_id: int
    detections: np.ndarray  # indices into the results list
    det_class: np.ndarray
    det_score: np.ndarray
    gt_ids: np.ndarray  # annotation ids of the image's objects (crowd regions apart)
    gt_class: np.ndarray
    iou: np.ndarray  # [detections, objects]
    crowd_iou: np.ndarray  # [detections, crowd regions]: the share of each detection inside the region
    crowd_class: np.ndarray


@dataclass
class Matching:
    """COCO's matching of one image at one threshold: the object each detection found (-1: none), the detection
    each object was found by (-1: none), and the detections ignored for covering a crowd region."""

    det_gt: np.ndarray
    gt_det: np.ndarray
    ignored: np.ndarray


def _geometry(record: dict, iou_type: str) -> object:
    return record["segmentation"] if iou_type == "segm" else box_of(record)


def image_overlaps(gt_coco: object, results: list[dict], iou_type: str, max_dets: int) -> list[ImageOverlaps]:
    """`ImageOverlaps` of every ground-truth image (ascending id, COCO's order), masks or boxes by ``iou_type``."""
    gt_rles = ground_truth_rles(gt_coco) if iou_type == "segm" else None
    by_image: dict[int, list[int]] = {}
    for index, record in enumerate(results):
        by_image.setdefault(record["image_id"], []).append(index)
    out = []
    for image_id in sorted(img["id"] for img in gt_coco.dataset["images"]):
        anns = gt_coco.img_ann_map.get(image_id, [])
        objects = [a for a in anns if not a.get("iscrowd", 0)]
        crowds = [a for a in anns if a.get("iscrowd", 0)]
        dets = _top_per_class(by_image.get(image_id, []), results, max_dets)

        def shapes(group: list[dict], rles=gt_rles) -> list:
            return [rles[a["id"]] for a in group] if rles is not None else [a["bbox"] for a in group]

        geometry = [_geometry(results[i], iou_type) for i in dets]
        out.append(
            ImageOverlaps(
                image_id=image_id,
                detections=np.asarray(dets, dtype=np.int64),
                det_class=np.asarray([results[i]["category_id"] for i in dets], dtype=np.int64),
                det_score=np.asarray([results[i]["score"] for i in dets], dtype=np.float64),
                gt_ids=np.asarray([a["id"] for a in objects], dtype=np.int64),
                gt_class=np.asarray([a["category_id"] for a in objects], dtype=np.int64),
                iou=_ious(geometry, shapes(objects), crowd=False),
                crowd_iou=_ious(geometry, shapes(crowds), crowd=True),
                crowd_class=np.asarray([a["category_id"] for a in crowds], dtype=np.int64),
            )
        )
    return out


def _top_per_class(indices: list[int], results: list[dict], max_dets: int) -> list[int]:
    """The image's detections by score (stable), at most ``max_dets`` of each class, as COCO keeps them."""
    ordered = sorted(indices, key=lambda i: -results[i]["score"])
    kept: dict[int, int] = {}
    out = []
    for i in ordered:
        cat = results[i]["category_id"]
        if kept.get(cat, 0) < max_dets:
            kept[cat] = kept.get(cat, 0) + 1
            out.append(i)
    return out


def _ious(detections: list, truths: list, crowd: bool) -> np.ndarray:
    if not detections or not truths:
        return np.zeros((len(detections), len(truths)))
    return np.asarray(mask_utils.iou(detections, truths, [int(crowd)] * len(truths)), dtype=np.float64)


def match(overlaps: ImageOverlaps, threshold: float = FOREGROUND_IOU, keep: np.ndarray | None = None) -> Matching:
    """COCO's matching of one image (see the module doc); ``keep`` leaves detections out (a score cut)."""
    n_det, n_gt = overlaps.iou.shape
    det_gt, gt_det = np.full(n_det, -1), np.full(n_gt, -1)
    ignored = np.zeros(n_det, dtype=bool)
    floor = min(threshold, 1 - 1e-10)
    for d in range(n_det):
        if keep is not None and not keep[d]:
            continue
        cls = overlaps.det_class[d]
        candidates = np.where((overlaps.gt_class == cls) & (gt_det < 0), overlaps.iou[d], -1.0)
        if n_gt and candidates.max() >= floor:
            j = int(np.flatnonzero(candidates == candidates.max())[-1])  # COCO keeps the last of equal IoUs
            det_gt[d], gt_det[j] = j, d
        elif (overlaps.crowd_iou[d][overlaps.crowd_class == cls] >= floor).any():
            ignored[d] = True
    return Matching(det_gt, gt_det, ignored)


def interpolated_ap(scores: np.ndarray, true: np.ndarray, num_gt: int) -> tuple[float, np.ndarray]:
    """COCO's AP of one class at one IoU from its detections (in COCO's order: image by image, each by score):
    precision made non-increasing, read at 101 recall points (0 past the highest recall), averaged.
    Returns (AP, the 101 precisions); (-1, all -1) without ground truth, as COCO."""
    if num_gt <= 0:
        return -1.0, np.full(len(RECALL_POINTS), -1.0)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    hits = np.asarray(true, dtype=bool)[order]
    tps, fps = np.cumsum(hits), np.cumsum(~hits)
    recall = tps / num_gt
    precision = tps / (tps + fps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    curve = np.zeros(len(RECALL_POINTS))
    inside = at < len(precision)
    curve[inside] = precision[at[inside]]
    return float(curve.mean()), curve
