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
from instaseg.evaluation.coco import CocoEvaluator, check_area_from, check_max_dets
from instaseg.evaluation.files import check_score_threshold
from instaseg.evaluation.report import write_evaluation
from instaseg.utils.images import read_image
from instaseg.utils.progress import track

__all__ = ["evaluate", "predict_split"]

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
    from torch.utils.data import DataLoader

    loader = DataLoader(_Images(gt), batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    for batch in track(loader, description, total=len(loader), stderr=False):
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
    analyze: bool = False,
    score_threshold: float | None = None,
) -> dict:
    """COCO box and mask AP of a checkpoint on a dataset split, at each image's original resolution.

    ``data``: a dataset folder (``annotations/instances_{split}.json`` + ``images/``) or an annotation json.
    ``area_from``: "mask" or "box", what sizes detections for mask AP's ranges; ``analyze``, ``score_threshold``:
    the analysis in ``out/analysis/`` (see `instaseg.evaluation.files.evaluate_files`).
    Writes ``evaluate_result.json`` in ``out`` (default: the checkpoint's folder) and returns the result plus
    its path under ``output``.
    """
    from instaseg.inference.backends.torch import load
    from instaseg.inference.predictor import Predictor

    check_max_dets(max_dets)
    check_area_from(area_from)
    check_score_threshold(score_threshold)
    gt, split_name = _load_split(data, split)
    backend, info = load(checkpoint, device)
    predictor = Predictor(backend, list(info["class_names"]), threshold=0.0)  # every detection the model keeps
    category_ids = _label_category_ids(list(info["class_names"]), gt, data)
    evaluator = CocoEvaluator(gt, max_dets, category_ids=category_ids, area_from=area_from)
    predict_split(predictor, gt, evaluator.add, batch_size=batch_size, num_workers=num_workers)
    inputs = {"split": split_name, "checkpoint": str(checkpoint), "data": str(data)}
    folder = Path(out) if out is not None else Path(checkpoint).resolve().parent
    return write_evaluation(
        gt, evaluator.gt_coco, evaluator.results, evaluator.evaluate(), inputs, folder, max_dets, area_from,
        analyze, score_threshold,
    )  # fmt: skip
