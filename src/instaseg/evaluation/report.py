"""``evaluate_result.json``: what evaluating a checkpoint or a results file writes.

``done_flag``, ``metrics`` (the 12 COCO numbers per IoU type, flat: ``box_AP`` ... ``mask_ARl``), ``per_class``
AP, ``max_dets``, ``area_from`` (what sized detections for mask AP's small/medium/large ranges: see
`instaseg.evaluation.coco`), the inputs, and the image and prediction counts.
"""

from __future__ import annotations

from pathlib import Path

from instaseg.utils.io import atomic_write_json

RESULT_FILE = "evaluate_result.json"


def evaluation_result(
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


def write_result(result: dict, out: Path) -> dict:
    """Write ``result`` as ``out/evaluate_result.json`` (atomically); returns it plus its path under ``output``."""
    path = atomic_write_json(out / RESULT_FILE, result)
    return {**result, "output": str(path)}
