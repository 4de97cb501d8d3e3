"""The instance comparison of tools/mmdet_equivalence.py and the markdown table it prints (numpy and torch only,
no MMDetection: tools/mmdet_kept_differences.py pairs instances the same way in our own environment).

``compare_instances`` pairs each reference instance with one of ours and keeps the worst pair's errors; ``worst``
sums that up over pictures; ``table_row`` writes one model's results as a row under ``HEADER``; ``save`` merges
them into a JSON file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

BOX_TOL, SCORE_TOL, IOU_TOL = 0.5, 1e-3, 0.99


def compare_instances(ref: dict, ours: dict, boxes: bool = True) -> dict:
    """Each reference instance (by descending score) paired with an unpaired one of ours of its label: the nearest
    box or, without boxes (SOLOv2), the nearest score then the best mask. The worst pair's errors."""
    n, m = len(ref["scores"]), len(ours["scores"])
    rm = torch.as_tensor(np.asarray(ref["masks"])).reshape(n, -1).double()
    om = torch.as_tensor(np.asarray(ours["masks"])).reshape(m, -1).double()
    inter = rm @ om.T
    union = rm.sum(1)[:, None] + om.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter)).numpy()
    rb, ob = np.asarray(ref["boxes"], np.float64), np.asarray(ours["boxes"], np.float64)
    rs, os_ = np.asarray(ref["scores"], np.float64), np.asarray(ours["scores"], np.float64)
    rl, ol = np.asarray(ref["labels"]), np.asarray(ours["labels"])
    free, box_err, score_err, min_iou, paired, low, total = set(range(m)), 0.0, 0.0, 1.0, 0, [], 0.0
    for i in np.argsort(-rs, kind="stable"):
        same = [j for j in free if ol[j] == rl[i]]
        if not same:
            continue
        if boxes:
            j = min(same, key=lambda c: np.abs(rb[i] - ob[c]).max())
            box_err = max(box_err, float(np.abs(rb[i] - ob[j]).max()))
        else:
            near = [c for c in same if abs(rs[i] - os_[c]) <= SCORE_TOL] or same
            j = max(near, key=lambda c: iou[i, c])
        score_err, min_iou = max(score_err, abs(rs[i] - os_[j])), min(min_iou, float(iou[i, j]))
        if iou[i, j] < IOU_TOL:  # the mask's area tells a one-pixel boundary difference from a real one
            low.append((round(float(iou[i, j]), 4), int(rm[i].sum()), int(om[j].sum())))
        free.remove(j)
        paired, total = paired + 1, total + float(iou[i, j])
    same_set = n == m == paired
    ok = same_set and box_err <= BOX_TOL and score_err <= SCORE_TOL and min_iou >= IOU_TOL
    return {"reference": n, "ours": m, "paired": paired, "same_set": same_set, "box_px": box_err,
            "score": score_err, "min_iou": min_iou, "mean_iou": total / max(paired, 1), "ok": ok,
            "below_iou": sorted(low)}  # fmt: skip


def worst(results: list[dict]) -> dict:
    return {"pictures_same_set": sum(r["same_set"] for r in results), "pictures": len(results),
            "instances": [r["reference"] for r in results], "box_px": max(r["box_px"] for r in results),
            "score": max(r["score"] for r in results), "min_iou": min(r["min_iou"] for r in results),
            "ok": all(r["ok"] for r in results), "per_picture": results}  # fmt: skip


HEADER = ("| model | pictures | features (backbone, neck) | head outputs | float64 features / head | instances, same "
          "input | instances, own pre- and post-processing | instances, reference input and our post-processing | "
          "losses | assignment |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip


DRIFT_COLUMN = "reference against itself, stem BGR / RGB: features, head"


def header(drift: bool = False) -> str:
    """The table's header; ``drift``: with the column of ``--reference-channels rgb`` runs."""
    if not drift:
        return HEADER
    names, rule = HEADER.split("\n")
    return f"{names} {DRIFT_COLUMN} |\n{rule} --- |"


def instances_cell(r: dict, boxes: bool) -> str:
    pictures = r["per_picture"]
    below = sum(len(p["below_iou"]) for p in pictures)
    box = f", boxes {r['box_px']:.2g} px" if boxes else ""
    return (f"{sum(p['ok'] for p in pictures)}/{len(pictures)} pass: {r['pictures_same_set']} same sets "
            f"({'+'.join(map(str, r['instances']))} instances){box}, scores {r['score']:.1e}, "
            f"mask IoU >= {r['min_iou']:.3f} ({below} pairs < {IOU_TOL})")  # fmt: skip


def table_row(r: dict) -> str:
    f64 = r.get("float64")
    f64_cell = f"{f64['features']:.1e} / {f64['head']:.1e}" if f64 else "-"
    if f64 and "same_input" in f64:
        f64_cell += "; instances, same input: " + instances_cell(f64["same_input"], True)
    boxes = r["model"].startswith("rtmdet")
    loss_rel = max(v["rel"] for v in r["losses"].values())
    values = ", ".join(f"{k} {v['reference']:.4g}" for k, v in r["losses"].items())
    cells = [r["model"], str(len(r["pictures"])), f"{r['features']:.1e}", f"{r['head']:.1e}",
             f64_cell,
             instances_cell(r["same_input"], boxes), instances_cell(r["own_processing"], boxes),
             instances_cell(r["reference_input_our_post_processing"], boxes),
             f"max rel {loss_rel:.1e} ({values})", r["assignment"]]  # fmt: skip
    drift = r.get("channel_order_drift")
    if drift:
        cells.append(f"{drift['features']:.1e}, {drift['head']:.1e}")
    return "| " + " | ".join(cells) + " |"


def save(path: str, name: str, result: dict) -> None:
    saved = {}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
    saved[name] = result
    with open(path, "w") as f:
        json.dump(saved, f, indent=1)
