"""Where a model fails: the per-class table, precision-recall curves, confusion matrices, TIDE's error breakdown and
the worst images, written into one folder with a page (``report.html``) that shows them all.

What `instaseg eval --analyze` and training (for its best checkpoint) write. Everything is computed from the same
COCO evaluation and matching the AP comes from (`instaseg.evaluation.matching`), for masks and for boxes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.data.coco import CocoData
from instaseg.data.masks import segmentation_to_mask
from instaseg.errors import UserError
from instaseg.evaluation.coco import PREFIX, box_of
from instaseg.evaluation.confusion import best_f1_threshold, confusion_matrix
from instaseg.evaluation.error_types import ERROR_TYPES, ErrorBreakdown, error_breakdown
from instaseg.evaluation.mask_scoring import ground_truth_rles
from instaseg.evaluation.matching import ImageOverlaps, Matching, image_overlaps, match
from instaseg.evaluation.per_class import CLASS_STATS, precision_recall
from instaseg.evaluation.plots import plot_confusion, plot_errors, plot_image_review, plot_pr_curves
from instaseg.evaluation.report_page import plural, write_report_page
from instaseg.utils.images import read_image
from instaseg.utils.io import atomic_write_json, atomic_write_text

ANALYSIS_DIR = "analysis"
WORST_IMAGES = 8
PR_IOUS = (0.5, 0.75)


def analyze(
    gt: CocoData,
    gt_coco: Any,
    results: list[dict],
    evaluations: dict[str, Any],
    result: dict,
    out: Path,
    score_threshold: float | None = None,
    worst: int = WORST_IMAGES,
) -> dict:
    """Write the analysis of ``results`` against ``gt`` into ``out``; returns its summary (also analysis.json).

    ``evaluations``: the COCOeval per IoU type the metrics came from; ``result``: evaluate_result.json's content;
    ``score_threshold``: the detections the confusion matrix and the pictures show (default: best F1 per IoU type).
    """
    out = Path(out)
    names = {c["id"]: c["name"] for c in gt_coco.dataset["categories"]}
    kinds: dict[str, dict] = {}
    for iou_type in sorted(evaluations, key=lambda t: t != "segm"):  # masks first
        ev = evaluations[iou_type]
        kinds[PREFIX[iou_type]] = _analyze_kind(gt_coco, results, iou_type, ev, names, out, score_threshold, result)
    primary = "mask" if "mask" in kinds else "box"
    worst_images = _worst_images(gt, gt_coco, results, kinds[primary], primary == "mask", names, out, worst)
    summary = {
        "folder": str(out),
        "report": str(out / "report.html"),
        "per_class_csv": str(atomic_write_text(out / "per_class.csv", per_class_csv(result["per_class"]))),
        "errors_png": str(plot_errors({k: v["errors"] for k, v in kinds.items()}, out / "errors.png")),
        "thresholds": {"foreground_iou": 0.5, "background_iou": 0.1},
        "kinds": {k: {key: v for key, v in kind.items() if not key.startswith("_")} for k, kind in kinds.items()},
        "worst_images": worst_images,
    }
    atomic_write_json(out / "analysis.json", summary)
    write_report_page(out / "report.html", result, summary)
    return summary


def _analyze_kind(
    gt_coco: Any,
    results: list[dict],
    iou_type: str,
    ev: Any,
    names: dict[int, str],
    out: Path,
    score_threshold: float | None,
    result: dict,
) -> dict:
    kind = PREFIX[iou_type]
    overlaps = image_overlaps(gt_coco, results, iou_type, int(ev.params.maxDets[-1]))
    matchings = [match(image) for image in overlaps]
    breakdown = error_breakdown(overlaps, matchings, sorted(names))
    threshold = score_threshold if score_threshold is not None else best_f1_threshold(overlaps, matchings)
    confusion = confusion_matrix(overlaps, names, threshold)
    title = f"{kind} confusion at IoU 0.5, detections scoring >= {threshold:.3f}"
    with_gt = [c for c in sorted(names) if result["per_class"][names[c]]["instances"] > 0]
    curves = {names[c]: {iou: precision_recall(ev, c, iou) for iou in PR_IOUS} for c in with_gt}
    return {
        "ap50": breakdown.ap50,
        "score_threshold": threshold,
        "score_threshold_from": "best F1" if score_threshold is None else "chosen",
        "errors": _errors_json(breakdown, names),
        "confusion": {"names": confusion.names, "counts": confusion.counts.tolist()},
        "confusion_csv": str(atomic_write_text(out / f"confusion_{kind}.csv", confusion.to_csv())),
        "confusion_png": str(plot_confusion(confusion.counts, confusion.names, title, out / f"confusion_{kind}.png")),
        "pr_png": str(plot_pr_curves(curves, f"{kind} precision-recall per class", out / f"pr_curves_{kind}.png")),
        "_overlaps": overlaps,
        "_breakdown": breakdown,
    }


def _errors_json(breakdown: ErrorBreakdown, names: dict[int, str]) -> dict:
    return {
        "counts": breakdown.counts,
        "delta_ap50": breakdown.delta_ap50,
        "ap50": breakdown.ap50,
        "per_class": {
            names[c]: {**breakdown.class_counts[c], "ap50": breakdown.class_ap50.get(c, -1.0)} for c in sorted(names)
        },
    }


def per_class_csv(per_class: dict[str, dict]) -> str:
    """The per-class table: one row per class, its instances then every IoU type's `CLASS_STATS`."""
    kinds = [p for p in ("mask", "box") if any(f"{p}_AP" in row for row in per_class.values())]
    columns = ["class", "instances"] + [f"{k}_{s}" for k in kinds for s in CLASS_STATS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for name, row in per_class.items():
        writer.writerow([name, row.get("instances", "")] + [_number(row.get(c)) for c in columns[2:]])
    return buf.getvalue()


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def image_errors(image: ImageOverlaps, threshold: float) -> tuple[np.ndarray, Matching]:
    """The detections shown at ``threshold`` and their matching: what the confusion matrix counts for the image."""
    keep = image.det_score >= threshold
    return keep, match(image, keep=keep)


def _worst_images(
    gt: CocoData,
    gt_coco: Any,
    results: list[dict],
    kind: dict,
    with_masks: bool,
    names: dict[int, str],
    out: Path,
    count: int,
) -> list[dict]:
    """The ``count`` images with the most errors at the kind's threshold (wrong or extra detections plus objects
    not found), each drawn as ground truth beside prediction."""
    threshold = kind["score_threshold"]
    ranked = []
    for image in kind["_overlaps"]:
        keep, matching = image_errors(image, threshold)
        wrong = int((keep & ~matching.ignored & (matching.det_gt < 0)).sum())
        unfound = int((matching.gt_det < 0).sum())
        if wrong + unfound:
            ranked.append((wrong + unfound, image, keep, matching, wrong, unfound))
    ranked.sort(key=lambda item: (-item[0], item[1].image_id))
    records = {img["id"]: img for img in gt.images}
    worst = []
    for rank, (_, image, keep, matching, wrong, unfound) in enumerate(ranked[:count], start=1):
        record = records[image.image_id]
        shown = _Shown(keep, matching, kind["_breakdown"].verdicts.get(image.image_id, []))
        picture = _review(gt, gt_coco, results, image, shown, with_masks, names, record)
        path = out / "worst" / f"{rank:02d}_image_{image.image_id}.png"
        title = f"{record['file_name']} (id {image.image_id}): {plural(wrong, 'wrong detection')}, "
        title += f"{plural(unfound, 'object')} not found at score >= {threshold:.3f}"
        plot_image_review(picture["image"], picture["truths"], picture["predictions"], title, path)
        worst.append(
            {"image_id": image.image_id, "file_name": record["file_name"], "wrong_detections": wrong}
            | {"objects_not_found": unfound, "png": str(path)}
        )
    return worst


@dataclass
class _Shown:
    """The detections an image review shows, their matching at that cut, and each one's verdict."""

    keep: np.ndarray
    matching: Matching
    verdicts: list[str]


def _review(
    gt: CocoData,
    gt_coco: Any,
    results: list[dict],
    image: ImageOverlaps,
    shown: _Shown,
    with_masks: bool,
    names: dict[int, str],
    record: dict,
) -> dict:
    """What `plot_image_review` draws for one image (masks when the evaluation had them)."""
    h, w = record["height"], record["width"]
    try:
        pixels = read_image(gt.image_path(record))
    except UserError:  # a results file scored without its images at hand: drawn on grey
        pixels = np.full((h, w, 3), 200, dtype=np.uint8)
    rles = ground_truth_rles(gt_coco) if with_masks else {}
    anns = {a["id"]: a for a in gt_coco.img_ann_map.get(image.image_id, [])}
    truths = []
    for j, ann_id in enumerate(image.gt_ids.tolist()):
        ann = anns[ann_id]
        mask = segmentation_to_mask(rles[ann_id], h, w).astype(bool) if with_masks else None
        missed = bool(shown.matching.gt_det[j] < 0)
        truths.append({"mask": mask, "box": ann["bbox"], "text": names[ann["category_id"]], "missed": missed})
    predictions = []
    for d in np.flatnonzero(shown.keep & ~shown.matching.ignored)[::-1]:  # lowest score first, drawn under
        det = results[image.detections[d]]
        mask = segmentation_to_mask(det["segmentation"], h, w).astype(bool) if with_masks else None
        text = f"{names[det['category_id']]} {det['score']:.2f}"
        predictions.append({"mask": mask, "box": box_of(det), "text": text, "verdict": shown.verdicts[d]})
    return {"image": pixels, "truths": truths, "predictions": predictions}


__all__ = ["ANALYSIS_DIR", "ERROR_TYPES", "analyze", "per_class_csv"]
