"""COCO evaluation of a checkpoint on a dataset split, or of a COCO results file.

Both write ``evaluate_result.json`` (atomically) with ``done_flag``, ``metrics`` (the 12 COCO numbers per IoU
type, flat: ``box_AP`` ... ``mask_ARl``), ``per_class`` AP, ``max_dets``, ``area_from`` (what sized detections
for mask AP's small/medium/large ranges: see `instaseg.engine.coco_eval`) and the inputs. Where it goes when no
``out`` is given: beside the thing evaluated, the checkpoint's folder or the results file's folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.coco import CocoData, find_split_files, load_coco
from instaseg.data.masks import rle_to_json, segmentation_to_rle
from instaseg.engine.coco_eval import (
    AREA_FROM,
    IOU_TYPES,
    PREFIX,
    CocoEvaluator,
    check_area_from,
    check_max_dets,
    coco_metrics,
    predictions_to_coco_results,
    stat_names,
)
from instaseg.errors import UserError
from instaseg.utils.images import read_image
from instaseg.utils.io import atomic_write_json, read_json

__all__ = [
    "CocoEvaluator",
    "coco_metrics",
    "evaluate",
    "evaluate_files",
    "load_results",
    "predict_split",
    "predictions_to_coco_results",
    "print_metrics",
]

RESULT_FILE = "evaluate_result.json"
logger = logging.getLogger(__name__)


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


def _check_result(r: Any, i: int, path: Path, sizes: dict[int, tuple[int, int]], cats: set[int]) -> dict:
    record = f"result {i}"
    if not isinstance(r, dict):
        raise UserError("a result must be an object {image_id, category_id, score, bbox/segmentation}", path, record)
    image_id, cat, score = r.get("image_id"), r.get("category_id"), r.get("score")
    if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in sizes:
        raise UserError(f"image_id {image_id!r} is not an image of the ground truth", path, record)
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
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt.images}
    cats = set(gt.category_ids)
    results = [_check_result(r, i, path, sizes, cats) for i, r in enumerate(raw)]
    with_masks = ["segmentation" in r for r in results]
    if any(with_masks) and not all(with_masks):
        raise UserError("some results have a 'segmentation' and some do not", path, f"result {with_masks.index(False)}")
    return results, IOU_TYPES if all(with_masks) else ("bbox",)


def _result(
    metrics: dict, max_dets: int, inputs: dict, num_images: int, num_predictions: int, area_from: str = "mask"
) -> dict:
    """The content of ``evaluate_result.json``: ``done_flag`` says the evaluation ran to its end."""
    return {
        "done_flag": True,
        "metrics": {k: v for k, v in metrics.items() if k != "per_class"},
        "per_class": metrics["per_class"],
        "max_dets": max_dets,
        "area_from": area_from,
        **inputs,
        "num_images": num_images,
        "num_predictions": num_predictions,
    }


def _write_result(result: dict, out: Path) -> dict:
    path = atomic_write_json(out / RESULT_FILE, result)
    return {**result, "output": str(path)}


def evaluate_files(
    gt_json: str | Path,
    pred_json: str | Path,
    max_dets: int = 100,
    out: str | Path | None = None,
    area_from: str = "mask",
) -> dict:
    """COCO AP of a results file against a ground-truth file; writes ``evaluate_result.json`` in ``out``
    (default: the results file's folder). Returns the written result plus its path under ``output``.

    ``area_from``: what sizes a detection for mask AP's small/medium/large ranges. "mask" (default): its mask
    area, as detectron2 and torchvision do. "box": its ``bbox`` area (a mask-only record: its mask's bounding
    box), as pycocotools' ``COCOeval`` does on a results file with boxes. Box AP always uses box area."""
    check_max_dets(max_dets)
    check_area_from(area_from)
    gt = load_coco(gt_json)
    results, iou_types = load_results(pred_json, gt)
    metrics = coco_metrics(gt, results, max_dets, iou_types, area_from)
    inputs = {"split": None, "gt": str(gt_json), "pred": str(pred_json)}
    result = _result(metrics, max_dets, inputs, len(gt.images), len(results), area_from)
    return _write_result(result, Path(out) if out is not None else Path(pred_json).resolve().parent)


def _load_split(data: str | Path, split: str) -> tuple[CocoData, str]:
    """The split to score: ``data`` is a dataset folder (``split`` picks the file) or one annotation json."""
    if Path(data).is_file():
        return load_coco(data), Path(data).name
    splits = find_split_files(data)  # only the split asked for is read: a train json can be large
    if split not in splits:
        raise UserError(f"no '{split}' split (found: {', '.join(splits)})", data)
    return load_coco(splits[split]), split


def _label_category_ids(class_names: list[str], gt: CocoData, data: str | Path) -> list[int]:
    """The dataset category id of each model label (1..K), matched by class name so re-numbered datasets work."""
    by_name: dict[str, int] = {}
    for cat in sorted(gt.categories, key=lambda c: c["id"]):
        by_name.setdefault(cat["name"], cat["id"])
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise UserError(f"the checkpoint's classes {missing} are not categories of the dataset", data)
    unknown = sorted(set(by_name) - set(class_names))
    if unknown:
        logger.warning("dataset classes the model does not predict score AP 0: %s", ", ".join(unknown))
    return [by_name[n] for n in class_names]


class _Images:
    """A split's images at original size (HxWx3 uint8 RGB) with their ids; a map-style dataset for DataLoader."""

    def __init__(self, gt: CocoData):
        self.gt = gt

    def __len__(self) -> int:
        return len(self.gt.images)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        record = self.gt.images[index]
        path = self.gt.image_path(record)
        pixels = read_image(path)
        if pixels.shape[:2] != (record["height"], record["width"]):
            # masks are scored at the record's size: a different picture would be scored against the wrong GT
            h, w = pixels.shape[:2]
            size = f"{record['width']}x{record['height']}"
            raise UserError(f"image is {w}x{h} but its record says {size}", path, f"image id {record['id']}")
        return int(record["id"]), pixels


def predict_split(
    predictor: Any,
    gt: CocoData,
    sink: Callable[[int, dict], None],
    batch_size: int = 2,
    num_workers: int = 0,
    description: str = "evaluating",
) -> None:
    """Run a `Predictor` (the path users call) over every image of ``gt`` at original size and hand each image's
    detections to ``sink(image_id, {boxes, labels, scores, masks})``, masks as RLE in the image's pixels."""
    from rich.progress import track
    from torch.utils.data import DataLoader

    loader = DataLoader(_Images(gt), batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    for batch in track(loader, description=description, total=len(loader), transient=True):
        detections = predictor.detect([pixels for _, pixels in batch])
        for (image_id, _), det in zip(batch, detections, strict=True):
            sink(image_id, {"boxes": det.boxes, "labels": det.labels, "scores": det.scores, "masks": det.rles})


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "val",
    max_dets: int = 100,
    batch_size: int = 2,
    device: str = "auto",
    out: str | Path | None = None,
    num_workers: int = 0,
    area_from: str = "mask",
) -> dict:
    """COCO box and mask AP of a checkpoint on a dataset split, at each image's original resolution.

    ``data``: a dataset folder (``annotations/instances_{split}.json`` + ``images/``) or an annotation json.
    ``area_from``: "mask" or "box", what sizes detections for mask AP's ranges (see `evaluate_files`).
    Writes ``evaluate_result.json`` in ``out`` (default: the checkpoint's folder) and returns the result plus
    its path under ``output``.
    """
    from instaseg.inference.backends.torch import load
    from instaseg.inference.predictor import Predictor

    check_max_dets(max_dets)
    check_area_from(area_from)
    gt, split_name = _load_split(data, split)
    backend, info = load(checkpoint, device)
    predictor = Predictor(backend, list(info["class_names"]), threshold=0.0)  # every detection the model keeps
    category_ids = _label_category_ids(list(info["class_names"]), gt, data)
    evaluator = CocoEvaluator(gt, max_dets, category_ids=category_ids, area_from=area_from)
    predict_split(predictor, gt, evaluator.add, batch_size=batch_size, num_workers=num_workers)
    metrics = evaluator.compute()
    inputs = {"split": split_name, "checkpoint": str(checkpoint), "data": str(data)}
    result = _result(metrics, max_dets, inputs, len(gt.images), len(evaluator.results), area_from)
    return _write_result(result, Path(out) if out is not None else Path(checkpoint).resolve().parent)


def _max_dets_of(metrics: dict) -> int:
    """The N of the ``AR{N}`` key (the recall at maxDets N) in a flat metrics dict."""
    for key in metrics:
        tail = key.split("_AR", 1)[1] if "_AR" in key else ""
        if tail.isdigit() and tail not in ("1", "10"):
            return int(tail)
    return 100


def _fmt(v: float | None) -> str:
    return "-" if v is None or v < 0 else f"{v:.3f}"


def print_metrics(result: dict, console: Any = None) -> None:
    """A compact table of the 12 COCO numbers for box and mask (-1, "no such objects", shows as "-"), and under
    it, with mask metrics, one line naming what sized detections for APs/APm/APl (``area_from``).

    ``result``: what `evaluate` / `evaluate_files` return, or `CocoEvaluator.compute`'s flat dict.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metrics = result.get("metrics", result)
    max_dets = result.get("max_dets") or _max_dets_of(metrics)
    prefixes = [PREFIX[t] for t in IOU_TYPES if f"{PREFIX[t]}_AP" in metrics]
    # one row per number: fits any terminal width, where 12 columns would not
    table = Table(title=f"COCO metrics (maxDets {max_dets})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    for prefix in prefixes:
        table.add_column(prefix, justify="right")
    for name in stat_names(max_dets):
        table.add_row(name, *(_fmt(metrics.get(f"{prefix}_{name}")) for prefix in prefixes))
    console.print(table)
    if "mask" in prefixes:
        area_from = result.get("area_from", "mask")
        convention = AREA_FROM.get(area_from, area_from)
        line = f"mask APs/APm/APl size detections by {convention}; box AP by box area (see --area-from)"
        console.print(line, soft_wrap=True)
    if result.get("output"):
        console.print(f"written to {result['output']}")
