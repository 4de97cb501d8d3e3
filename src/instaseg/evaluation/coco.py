"""COCO box and mask AP with faster-coco-eval (the same numbers as pycocotools, computed in C++).

`CocoEvaluator` collects predictions image by image (as the model returns them) and scores them against a
`CocoData`; `coco_metrics` scores a list of COCO results records directly (results files).

The size of a detection (which of APs/APm/APl ignores it when unmatched) is its box area for box AP. For mask AP
it depends on ``area_from`` (see `AREA_FROM`): "mask" (default) sizes each detection by its mask area, as
detectron2's and torchvision's evaluators do (they drop the boxes before pycocotools' ``loadRes``); "box" sizes it
by its box area, as pycocotools' ``COCOeval`` does on a results file whose records carry a ``bbox`` (its
``loadRes`` then sets ``area = w * h`` for every record, masks or not). Ground truth is sized by its own ``area``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from instaseg.data.coco import CocoData
from instaseg.data.masks import mask_to_rle, rle_area, rle_bbox, rle_to_json, segmentation_to_rle
from instaseg.errors import UserError
from instaseg.evaluation.mask_scoring import MaskCOCOeval, results_index
from instaseg.evaluation.per_class import class_stats, instance_counts

IOU_TYPES = ("bbox", "segm")
# what sizes a detection for mask AP's small/medium/large ranges -> the convention's name, as printed
AREA_FROM = {
    "mask": "mask area (detectron2, torchvision)",
    "box": "box area (pycocotools on a results file with boxes)",
}
PREFIX = {"bbox": "box", "segm": "mask"}
MASK_THRESHOLD = 0.5
logger = logging.getLogger(__name__)
_quiet = logger.debug


def stat_names(max_dets: int = 100) -> list[str]:
    """The 12 COCO summary numbers in pycocotools' order; the third recall follows ``max_dets``."""
    return ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", f"AR{max_dets}", "ARs", "ARm", "ARl"]


def check_max_dets(max_dets: int) -> int:
    # COCO's recalls are taken at maxDets [1, 10, N]; N below 10 would break that ladder
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 10:
        raise UserError(f"max_dets must be an integer >= 10, got {max_dets!r}")
    return max_dets


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def encode_masks(masks: Any, threshold: float = MASK_THRESHOLD) -> list[dict]:
    """Instance masks -> compressed RLE dicts with str ``counts``.

    ``masks``: a list of RLE dicts, or a bool/uint8/float array or tensor [N,H,W] or [N,1,H,W] (float: soft
    masks, foreground where > threshold). Instances are binarised one at a time so a big float stack is never
    copied whole (and a GPU tensor is thresholded on its device before the small bool copy comes to the CPU).
    """
    if isinstance(masks, (list, tuple)) and all(isinstance(m, dict) for m in masks):
        return [rle_to_json(segmentation_to_rle(m, *m["size"])) for m in masks]
    rles = []
    for i in range(len(masks)):
        m = masks[i]
        if m.ndim == 3:
            if m.shape[0] != 1:
                raise ValueError(f"masks must be [N,H,W] or [N,1,H,W], got instance shape {tuple(m.shape)}")
            m = m[0]
        is_bool = str(m.dtype) in ("bool", "torch.bool")
        rles.append(mask_to_rle(_numpy(m if is_bool else m > threshold)))
    return rles


def predictions_to_coco_results(
    image_id: int, prediction: dict, category_ids: Sequence[int], image_size: tuple[int, int] | None = None
) -> list[dict]:
    """One image's model output -> COCO results records (``loadRes`` format; RLE ``counts`` as str).

    ``prediction``: boxes [N,4] xyxy in original image pixels, labels [N] in 1..K (K = len(category_ids)),
    scores [N], optional masks (see `encode_masks`). ``image_size`` (h, w), when given, checks mask sizes.
    """
    boxes = _numpy(prediction["boxes"]).reshape(-1, 4).astype(np.float64)
    labels = _numpy(prediction["labels"]).reshape(-1).astype(np.int64)
    scores = _numpy(prediction["scores"]).reshape(-1).astype(np.float64)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores")
    if len(labels) and (labels.min() < 1 or labels.max() > len(category_ids)):
        raise ValueError(f"image {image_id}: labels must be in 1..{len(category_ids)}, got {sorted(set(labels))}")
    records = [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[label - 1]),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(score),
        }
        for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True)
    ]
    if prediction.get("masks") is not None:
        rles = encode_masks(prediction["masks"])
        if len(rles) != len(records):
            raise ValueError(f"image {image_id}: {len(rles)} masks for {len(records)} boxes")
        for record, rle in zip(records, rles, strict=True):
            if image_size is not None and tuple(rle["size"]) != tuple(image_size):
                raise ValueError(f"image {image_id}: mask size {rle['size']} is not the image size {image_size}")
            record["segmentation"] = rle
    return records


def _box_polygon(bbox: Sequence[float]) -> list[list[float]]:
    x, y, w, h = bbox
    return [[x, y, x, y + h, x + w, y + h, x + w, y]]


def _gt_annotation(ann: dict, image: dict | None) -> dict:
    """A copy of a ground-truth annotation with the fields COCOeval needs (COCOeval writes into its input)."""
    ann = dict(ann)
    ann.setdefault("iscrowd", 0)
    seg = ann.get("segmentation")
    if ("area" not in ann or "bbox" not in ann) and seg and image is not None:
        rle = segmentation_to_rle(seg, image["height"], image["width"])
        ann.setdefault("area", rle_area(rle))
        ann.setdefault("bbox", rle_bbox(rle))
    if "bbox" in ann:
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        if seg is None:  # a box-only record: its box stands in for the mask, as loadRes does for box results
            ann["segmentation"] = _box_polygon(ann["bbox"])
    return ann


def gt_to_coco(gt: CocoData, masks: bool = True) -> COCO:
    """A faster-coco-eval COCO index over copies of ``gt``'s records (the CocoData is left untouched).

    ``masks``: whether mask AP will be asked of it (only then are box-only records worth a warning).
    """
    images = {img["id"]: img for img in gt.images}
    known = {c["id"] for c in gt.categories}
    # annotations of images or categories outside the dataset cannot be scored; COCOeval would trip on them
    anns = [_gt_annotation(a, images.get(a["image_id"])) for a in gt.annotations if a["image_id"] in images]
    anns = [a for a in anns if a["category_id"] in known and "bbox" in a]
    boxed = sum(a.get("segmentation") is None for a in gt.annotations)
    if boxed and masks:
        logger.warning("%d ground-truth annotations have no segmentation: their boxes stand in for masks", boxed)
    dataset = {
        "images": [dict(img) for img in gt.images],
        "annotations": anns,
        "categories": [dict(c) for c in gt.categories],
    }
    return COCO(dataset, print_function=_quiet)


def check_area_from(area_from: str) -> str:
    if area_from not in AREA_FROM:
        raise UserError(f"area_from must be one of {', '.join(AREA_FROM)}, got {area_from!r}")
    return area_from


def box_of(r: dict) -> list[float]:
    """A result's [x, y, w, h]: its own ``bbox``, else its mask's bounding box."""
    bbox = r.get("bbox")
    if bbox is None:  # a mask-only result is boxed by its mask
        bbox = rle_bbox(segmentation_to_rle(r["segmentation"], *r["segmentation"]["size"]))
    return bbox


def _results_for(results: Iterable[dict], iou_type: str, area_from: str = "mask") -> list[dict]:
    # loadRes sizes every record by its bbox (w * h) when the first has one, else by its mask. bbox: drop masks,
    # box area is the detection's area. segm, area_from "mask": drop boxes so loadRes takes the mask area (as
    # torchvision's and detectron2's evaluators do); "box": keep (or add) boxes, as a raw results file has them
    if iou_type == "bbox":
        keys = ("image_id", "category_id", "score")
        return [{**{k: r[k] for k in keys}, "bbox": box_of(r)} for r in results]
    keys = ("image_id", "category_id", "segmentation", "score")
    if area_from == "box":
        return [{**{k: r[k] for k in keys}, "bbox": box_of(r)} for r in results]
    return [{k: r[k] for k in keys} for r in results]


def run_cocoeval(
    gt_coco: COCO, results: list[dict], iou_type: str, max_dets: int, area_from: str = "mask"
) -> COCOeval_faster:
    """Evaluate, accumulate and summarise one IoU type; the returned object holds ``eval`` and ``stats``."""
    records = _results_for(results, iou_type, area_from)
    if iou_type == "segm":  # the IoUs computed once per image and category, on the records' own RLE
        ev: COCOeval_faster = MaskCOCOeval(gt_coco, results_index(gt_coco, records, area_from))
    else:
        dt_coco = gt_coco.loadRes(records)
        dt_coco.print_function = _quiet
        ev = COCOeval_faster(gt_coco, dt_coco, iou_type, print_function=_quiet)
    ev.params.maxDets = [1, 10, max_dets]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def score_results(
    gt_coco: COCO, results: list[dict], max_dets: int, iou_types: Sequence[str], area_from: str = "mask"
) -> dict[str, COCOeval_faster]:
    """One evaluated, accumulated COCOeval per IoU type (what `summarize` and the analysis read)."""
    return {iou_type: run_cocoeval(gt_coco, results, iou_type, max_dets, area_from) for iou_type in iou_types}


def summarize(gt_coco: COCO, evaluations: dict[str, COCOeval_faster], max_dets: int) -> dict:
    """The 12 COCO numbers per IoU type (flat keys ``box_AP``... ``mask_ARl``) and ``per_class``: by class name,
    its ground-truth ``instances`` and `CLASS_STATS` per IoU type (``box_AP``, ``mask_AP50``, ``mask_APs``...)."""
    names = {c["id"]: c["name"] for c in gt_coco.dataset["categories"]}
    counts = instance_counts(gt_coco.dataset)
    metrics: dict[str, Any] = {}
    per_class: dict[str, dict[str, float]] = {names[i]: {"instances": counts[i]} for i in sorted(names)}
    for iou_type, ev in evaluations.items():
        prefix = PREFIX[iou_type]
        metrics.update({f"{prefix}_{n}": float(v) for n, v in zip(stat_names(max_dets), ev.stats[:12], strict=True)})
        for cat_id, stats in class_stats(ev).items():
            per_class[names[cat_id]].update({f"{prefix}_{k}": v for k, v in stats.items()})
    metrics["per_class"] = per_class
    return metrics


def coco_metrics(
    gt: CocoData | COCO,
    results: list[dict],
    max_dets: int = 100,
    iou_types: Sequence[str] = IOU_TYPES,
    area_from: str = "mask",
) -> dict:
    """`summarize`'s numbers of ``results`` against ``gt``.

    ``area_from``: what sizes a detection for mask AP's small/medium/large ranges, "mask" or "box" (module doc).
    """
    check_max_dets(max_dets)
    check_area_from(area_from)
    gt_coco = gt if isinstance(gt, COCO) else gt_to_coco(gt, masks="segm" in iou_types)
    return summarize(gt_coco, score_results(gt_coco, results, max_dets, iou_types, area_from), max_dets)


class CocoEvaluator:
    """Collects predictions per image and computes COCO box/mask AP against ``gt``.

    ``add(image_id, prediction)`` takes a model output at original image size (see
    `predictions_to_coco_results`); ``compute()`` returns `coco_metrics`' dict; ``reset()`` starts over.
    ``results`` / ``add_results`` let distributed workers gather their records into one evaluator.
    ``area_from``: "mask" or "box", what sizes a detection for mask AP's ranges (see the module doc).
    """

    def __init__(
        self,
        gt: CocoData,
        max_dets: int = 100,
        iou_types: Sequence[str] = IOU_TYPES,
        category_ids: Sequence[int] | None = None,
        area_from: str = "mask",
    ):
        unknown = set(iou_types) - set(IOU_TYPES)
        if unknown or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
        self.gt = gt
        self.max_dets = check_max_dets(max_dets)
        self.area_from = check_area_from(area_from)
        self.iou_types = tuple(iou_types)
        # the category id of each model label 1..K: the dataset's own order unless the model's classes differ
        self.category_ids = list(category_ids) if category_ids is not None else gt.category_ids
        self._sizes = {img["id"]: (img["height"], img["width"]) for img in gt.images}
        self._gt_coco: COCO | None = None  # built on first compute and reused: GT copied and indexed once
        self.results: list[dict] = []

    def reset(self) -> None:
        self.results = []

    def add(self, image_id: int, prediction: dict) -> None:
        image_id = int(image_id)
        if image_id not in self._sizes:
            raise ValueError(f"image id {image_id} is not in the ground truth")
        if "segm" in self.iou_types and prediction.get("masks") is None:
            raise ValueError(f"image {image_id}: mask AP needs 'masks' in the prediction")
        self.results.extend(predictions_to_coco_results(image_id, prediction, self.category_ids, self._sizes[image_id]))

    def add_results(self, results: Iterable[dict]) -> None:
        self.results.extend(results)

    @property
    def gt_coco(self) -> COCO:
        """The ground truth's COCO index, built on first use and reused (its masks are rasterised once)."""
        if self._gt_coco is None:
            self._gt_coco = gt_to_coco(self.gt, masks="segm" in self.iou_types)
        return self._gt_coco

    def evaluate(self) -> dict[str, COCOeval_faster]:
        """One evaluated COCOeval per IoU type, for `summarize` and `instaseg.evaluation.analysis`."""
        return score_results(self.gt_coco, self.results, self.max_dets, self.iou_types, self.area_from)

    def compute(self) -> dict:
        return summarize(self.gt_coco, self.evaluate(), self.max_dets)
