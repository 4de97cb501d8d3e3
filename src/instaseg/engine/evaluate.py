"""COCO evaluation of a checkpoint on a dataset split, through the predictor users call.

Writes ``evaluate_result.json`` (atomically, `instaseg.evaluation.report`), by default in the checkpoint's
folder. A COCO results file is scored without a model by `instaseg.evaluation.files.evaluate_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.coco import CocoData, find_split_files, load_coco
from instaseg.errors import UserError
from instaseg.evaluation.coco import (
    AREA_FROM,
    IOU_TYPES,
    PREFIX,
    CocoEvaluator,
    check_area_from,
    check_max_dets,
    stat_names,
)
from instaseg.evaluation.report import evaluation_result, write_result
from instaseg.utils.images import read_image

__all__ = ["evaluate", "predict_split", "print_metrics"]

logger = logging.getLogger(__name__)


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
    ``area_from``: "mask" or "box", what sizes detections for mask AP's ranges (see
    `instaseg.evaluation.files.evaluate_files`).
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
    result = evaluation_result(metrics, max_dets, inputs, len(gt.images), len(evaluator.results), area_from)
    return write_result(result, Path(out) if out is not None else Path(checkpoint).resolve().parent)


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
