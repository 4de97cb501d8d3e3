"""COCO AP of a results file (COCO results json) against a ground-truth file: no model involved.

Every record is checked against the ground truth first, so a bad file fails in one line naming the record
(`UserError`), never deep inside the COCO tools.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePath
from typing import Any

from instaseg.data.coco import CocoData, load_coco
from instaseg.data.masks import rle_to_json, segmentation_to_rle
from instaseg.errors import UserError
from instaseg.evaluation.coco import IOU_TYPES, check_area_from, check_max_dets, gt_to_coco, score_results
from instaseg.evaluation.report import write_evaluation
from instaseg.utils.io import read_json

# what to do about results numbered otherwise than the ground truth
_REMEDY = "results must carry the ground truth's image ids (instaseg predict --coco-results FILE --gt ANNOTATIONS)"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_segmentation(seg: Any, size: tuple[int, int], path: Path, record: str) -> dict:
    """A result's polygons or RLE -> compressed json RLE at the image's size (loadRes takes only RLE)."""
    h, w = size
    if isinstance(seg, dict):
        if not (isinstance(seg.get("counts"), (str, list)) and isinstance(seg.get("size"), list)):
            raise UserError("'segmentation' RLE needs 'counts' (str or list) and 'size' [h, w]", path, record)
        if [int(v) for v in seg["size"] if _is_number(v)] != [h, w]:
            raise UserError(f"RLE size {seg['size']} is not the image size [{h}, {w}]", path, record)
    elif not (isinstance(seg, list) and all(isinstance(p, list) and all(map(_is_number, p)) for p in seg)):
        raise UserError("'segmentation' must be an RLE {size, counts} or polygon lists", path, record)
    try:
        return rle_to_json(segmentation_to_rle(seg, h, w))
    except (TypeError, ValueError, IndexError) as e:
        raise UserError(f"unreadable 'segmentation' ({e})", path, record) from None


def _check_image(r: dict, path: Path, record: str, images: dict[int, dict]) -> int:
    """The result's image id, which must be the ground truth's; a ``file_name`` it carries must name that image."""
    image_id = r.get("image_id")
    if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in images:
        raise UserError(f"image_id {image_id!r} is not an image of the ground truth", path, record)
    named = r.get("file_name")
    expected = images[image_id]["file_name"]
    if isinstance(named, str) and PurePath(named.replace("\\", "/")).name != PurePath(expected).name:
        why = f"is for {named!r} but image_id {image_id} is {expected!r} in the ground truth: {_REMEDY}"
        raise UserError(why, path, record)
    return image_id


def _check_ids_known(raw: list, path: Path, images: dict[int, dict]) -> None:
    """One line for a file whose image ids are not the ground truth's (most often all of them: another numbering)."""
    unknown = [i for i, r in enumerate(raw) if isinstance(r, dict) and r.get("image_id") not in images]
    if unknown:
        first = raw[unknown[0]].get("image_id")
        share = f"{len(unknown)} of {len(raw)} results"
        why = f"image_id {first!r} is not an image of the ground truth ({share}): {_REMEDY}"
        raise UserError(why, path, f"result {unknown[0]}")


def _check_result(r: Any, i: int, path: Path, images: dict[int, dict], cats: set[int]) -> dict:
    record = f"result {i}"
    if not isinstance(r, dict):
        raise UserError("a result must be an object {image_id, category_id, score, bbox/segmentation}", path, record)
    image_id = _check_image(r, path, record, images)
    cat, score = r.get("category_id"), r.get("score")
    sizes = {image_id: (images[image_id]["height"], images[image_id]["width"])}
    if not isinstance(cat, int) or isinstance(cat, bool) or cat not in cats:
        raise UserError(f"category_id {cat!r} is not a category of the ground truth", path, record)
    if not _is_number(score):
        raise UserError(f"'score' must be a number, got {score!r}", path, record)
    out = {"image_id": image_id, "category_id": cat, "score": float(score)}
    bbox = r.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise UserError(f"'bbox' must be [x, y, w, h] numbers, got {bbox!r}", path, record)
        out["bbox"] = [float(v) for v in bbox]
    if r.get("segmentation") is not None:
        out["segmentation"] = _check_segmentation(r["segmentation"], sizes[image_id], path, record)
    if "bbox" not in out and "segmentation" not in out:
        raise UserError("a result needs 'bbox' or 'segmentation'", path, record)
    return out


def load_results(path: str | Path, gt: CocoData) -> tuple[list[dict], tuple[str, ...]]:
    """Read and check a COCO results json against ``gt``; returns the records and the IoU types they allow.

    Box metrics always (a mask-only result is boxed by its mask); mask metrics when every result has a mask.
    """
    path = Path(path)
    raw = read_json(path)
    if isinstance(raw, dict) and isinstance(raw.get("annotations"), list):
        raw = raw["annotations"]  # a whole COCO file of predictions: its annotations are the results
    if not isinstance(raw, list):
        raise UserError("results must be a json list of {image_id, category_id, score, bbox/segmentation}", path)
    images = {img["id"]: img for img in gt.images}
    cats = set(gt.category_ids)
    _check_ids_known(raw, path, images)
    results = [_check_result(r, i, path, images, cats) for i, r in enumerate(raw)]
    with_masks = ["segmentation" in r for r in results]
    if any(with_masks) and not all(with_masks):
        raise UserError("some results have a 'segmentation' and some do not", path, f"result {with_masks.index(False)}")
    return results, IOU_TYPES if all(with_masks) else ("bbox",)


def evaluate_files(
    gt_json: str | Path,
    pred_json: str | Path,
    max_dets: int = 100,
    out: str | Path | None = None,
    area_from: str = "mask",
    analyze: bool = False,
    score_threshold: float | None = None,
) -> dict:
    """COCO AP of a results file against a ground-truth file; writes ``evaluate_result.json`` in ``out``
    (default: the results file's folder). Returns the written result plus its path under ``output``.

    ``area_from``: what sizes a detection for mask AP's small/medium/large ranges. "mask" (default): its mask
    area, as detectron2 and torchvision do. "box": its ``bbox`` area (a mask-only record: its mask's bounding
    box), as pycocotools' ``COCOeval`` does on a results file with boxes. Box AP always uses box area.
    ``analyze``: also write the analysis (`instaseg.evaluation.analysis`) into ``out/analysis/``, its confusion
    matrices and pictures at ``score_threshold`` (default: where F1 peaks)."""
    check_max_dets(max_dets)
    check_area_from(area_from)
    check_score_threshold(score_threshold)
    gt = load_coco(gt_json)
    results, iou_types = load_results(pred_json, gt)
    gt_coco = gt_to_coco(gt, masks="segm" in iou_types)
    evaluations = score_results(gt_coco, results, max_dets, iou_types, area_from)
    inputs = {"split": None, "gt": str(gt_json), "pred": str(pred_json)}
    folder = Path(out) if out is not None else Path(pred_json).resolve().parent
    return write_evaluation(
        gt, gt_coco, results, evaluations, inputs, folder, max_dets, area_from, analyze, score_threshold
    )


def check_score_threshold(score_threshold: float | None) -> None:
    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"the score threshold must be in [0, 1], got {score_threshold!r}")
