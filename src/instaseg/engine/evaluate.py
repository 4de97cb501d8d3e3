"""COCO evaluation of a checkpoint on a dataset split, or of a COCO results file."""

from __future__ import annotations

from instaseg.engine.coco_eval import CocoEvaluator, coco_metrics, predictions_to_coco_results

__all__ = ["CocoEvaluator", "coco_metrics", "predictions_to_coco_results"]
