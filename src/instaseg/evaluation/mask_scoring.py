"""Mask AP with pycocotools' numbers, without the work faster-coco-eval repeats on every evaluation.

Where its segm scoring spent the time (`python bench/eval_speed.py`'s 20k detections on 500 images): a third in
``loadRes``, which decodes every result's RLE twice (for its area, and for a box that mask scoring never reads); a
third turning every annotation into its own RLE before matching (ground-truth polygons rasterised again on each
evaluation, result strings decoded and encoded again); a third on the IoUs and the matching. Here the results index
is built directly with every area from one batched call, ground-truth masks are rasterised once per ground truth and
kept on its index, and the IoUs come from pycocotools' ``iou`` on the records' own RLE strings. Matching and
accumulation stay faster-coco-eval's C++, so every number is pycocotools' (the tests compare them).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)
_quiet = logger.debug
_AREA_CHUNK = 255
_RLE_CACHE = "_instaseg_mask_rles"  # attribute of a ground-truth index holding its masks as RLE, by annotation id


def _annotation_rle(segmentation: Any, height: int, width: int) -> Any:
    """pycocotools' ``annToRLE``: polygons merged into one RLE, uncompressed RLE compressed, compressed as it is."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def ground_truth_rles(gt_coco: COCO) -> dict[int, Any]:
    """Every ground-truth mask of ``gt_coco`` as RLE by annotation id, computed once and kept on the index."""
    cached = getattr(gt_coco, _RLE_CACHE, None)
    if cached is None:
        sizes = {img["id"]: (img["height"], img["width"]) for img in gt_coco.dataset["images"]}
        cached = {
            ann["id"]: _annotation_rle(ann["segmentation"], *sizes[ann["image_id"]])
            for ann in gt_coco.dataset["annotations"]
        }
        setattr(gt_coco, _RLE_CACHE, cached)
    return cached


def mask_areas(segmentations: list[dict]) -> np.ndarray:
    """Foreground pixels of compressed RLEs, a few hundred per call (pycocotools' ``area`` counts its list in a byte,
    and is four times faster than faster-coco-eval's here)."""
    chunks = [mask_utils.area(segmentations[i : i + _AREA_CHUNK]) for i in range(0, len(segmentations), _AREA_CHUNK)]
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def results_index(gt_coco: COCO, results: list[dict], area_from: str) -> COCO:
    """The results as ``gt_coco.loadRes`` would index them for mask AP, each record sized by ``area_from``:
    "mask" its mask area (records without a box), "box" its ``bbox`` area (records with one, as loadRes does)."""
    known = {img["id"] for img in gt_coco.dataset["images"]}
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise ValueError(f"results name images that are not in the ground truth: {sorted(unknown)[:5]}")
    if area_from == "box":
        areas = [float(r["bbox"][2] * r["bbox"][3]) for r in results]
    else:
        areas = mask_areas([r["segmentation"] for r in results]).tolist()
    anns = []
    for index, (record, area) in enumerate(zip(results, areas, strict=True), start=1):
        ann = {k: record[k] for k in ("image_id", "category_id", "score", "segmentation")}
        if area_from == "box":
            ann["bbox"] = record["bbox"]
        anns.append({**ann, "area": area, "id": index, "iscrowd": 0})
    index = COCO(print_function=_quiet)
    index.dataset = {
        "images": list(gt_coco.dataset["images"]),
        "categories": [dict(c) for c in gt_coco.dataset["categories"]],
        "annotations": anns,
    }
    index.createIndex()
    return index


class MaskCOCOeval(COCOeval_faster):
    """faster-coco-eval's evaluator for masks with the IoUs handed in by `computeIoU` (see the module doc)."""

    def __init__(self, gt_coco: COCO, dt_coco: COCO):
        super().__init__(gt_coco, dt_coco, "segm", print_function=_quiet)
        self.rle_iou_max_workers = 1  # pycocotools' iou holds the GIL: threads would only wait on each other
        self._gt_rles = ground_truth_rles(gt_coco)

    def _prepare(self) -> None:
        # without compute_rle it indexes the records and skips converting each one to its own RLE
        self.params.compute_rle = False
        try:
            super()._prepare()
        finally:
            self.params.compute_rle = True
        # faster-coco-eval hands its C++ matching each image's and category's records in the order of the annotation
        # list: the IoU columns follow it; the rows are the detections by score (a stable sort, as pycocotools')
        truths: dict[tuple[int, int], tuple[list, list[int]]] = {}
        for ann in self.cocoGt.dataset["annotations"]:
            rles, crowd = truths.setdefault((ann["image_id"], ann["category_id"]), ([], []))
            rles.append(self._gt_rles[ann["id"]])
            crowd.append(int(ann.get("iscrowd", 0)))
        detections: dict[tuple[int, int], list[dict]] = {}
        for ann in self.cocoDt.dataset["annotations"]:
            detections.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
        top = self.params.maxDets[-1]
        self._truths = truths
        self._detections = {
            key: [d["segmentation"] for d in sorted(dts, key=lambda d: -d["score"])[:top]]
            for key, dts in detections.items()
        }

    def computeIoU(self, imgId: int, catId: int) -> Any:  # noqa: N802, N803 (COCOeval's names)
        """The IoUs pycocotools computes for one image and category: detections by score, at most the largest
        maxDets of them, against the ground truth in index order, crowd regions as crowd."""
        truths, detections = self._truths.get((imgId, catId)), self._detections.get((imgId, catId))
        if not truths or not detections:
            return []
        rles, crowd = truths
        return mask_utils.iou(detections, rles, crowd)
