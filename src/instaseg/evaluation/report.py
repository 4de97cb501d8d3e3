"""``evaluate_result.json``: what evaluating a checkpoint or a results file writes.

``done_flag``, ``metrics`` (the 12 COCO numbers per IoU type, flat: ``box_AP`` ... ``mask_ARl``), ``per_class``
(per class name: its objects, and AP, AP50, AP75, APs/m/l, AR, ARs/m/l per IoU type), ``max_dets``, ``area_from``
(what sized detections for mask AP's small/medium/large ranges: see `instaseg.evaluation.coco`), the inputs, the
image and prediction counts, and with ``analyze`` an ``analysis`` summary (errors per type, the report's path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instaseg.data.coco import CocoData
from instaseg.evaluation.analysis import ANALYSIS_DIR, analyze
from instaseg.evaluation.coco import summarize
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


def write_evaluation(
    gt: CocoData,
    gt_coco: Any,
    results: list[dict],
    evaluations: dict[str, Any],
    inputs: dict,
    out: Path,
    max_dets: int,
    area_from: str,
    analyze_errors: bool = False,
    score_threshold: float | None = None,
) -> dict:
    """Summarise ``evaluations`` into ``out/evaluate_result.json``, with the analysis in ``out/analysis/`` when
    ``analyze_errors``; returns the result plus its path under ``output``."""
    metrics = summarize(gt_coco, evaluations, max_dets)
    result = evaluation_result(metrics, max_dets, inputs, len(gt.images), len(results), area_from)
    if analyze_errors:
        summary = analyze(gt, gt_coco, results, evaluations, result, out / ANALYSIS_DIR, score_threshold)
        result["analysis"] = {
            "report": summary["report"],
            "folder": summary["folder"],
            **{
                kind: {k: v for k, v in s["errors"].items() if k != "per_class"}
                | {"score_threshold": s["score_threshold"]}
                for kind, s in summary["kinds"].items()
            },
        }
    return write_result(result, out)
