"""Comparison table and instance matching, shared by the R-CNN and the one-stage (../paddle_onestage_full)
full-size comparisons."""

from __future__ import annotations

import json
import os

import numpy as np

VERBOSE = bool(os.environ.get("VERBOSE"))
TOL = {"box_px": 0.5, "score": 1e-3, "mask_iou": 0.99, "loss_rel": 1e-3, "feat_rel": 1e-3}


def err(ours, ref) -> tuple[float, float]:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    a = float(np.abs(ours - ref).max()) if ours.size else 0.0
    return a, a / max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-12)


class Table:
    def __init__(self, title: str):
        self.title, self.rows = title, []

    def add(self, name: str, abs_err: float, rel_err: float, ok: bool, note: str = "") -> None:
        self.rows.append((name, float(abs_err), float(rel_err), bool(ok), note))

    def tensor(self, name: str, ours, ref, tol_rel: float = TOL["feat_rel"], note: str = "") -> None:
        a, r = err(ours, ref)
        self.add(name, a, r, r <= tol_rel, note)

    def print(self) -> None:
        print(f"\n### {self.title}\n")
        print("| stage | max abs err | max rel err | pass | note |\n|---|---|---|---|---|")
        for name, a, r, ok, note in self.rows:
            print(f"| {name} | {a:.3g} | {r:.3g} | {'yes' if ok else 'NO'} | {note} |")

    def report(self, json_path: str | None) -> None:
        """Print the table, and write its rows to ``json_path`` when one is given."""
        self.print()
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"title": self.title, "rows": self.rows}, f, indent=1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def match_instances(ref_det, ref_masks, our_det, our_masks) -> dict:
    """Greedy one-to-one matching in the reference's order: same label, score within 1e-3, box corners within
    0.5 px (rows [label, score, x1, y1, x2, y2]; a NaN box is not compared)."""
    used = np.zeros(len(our_det), bool)
    pairs = []
    for i, r in enumerate(ref_det):
        best, best_d = -1, None
        for j, o in enumerate(our_det):
            if used[j] or int(o[0]) != int(r[0]):
                continue
            box = np.abs(o[2:] - r[2:])
            box = 0.0 if np.isnan(box).all() else np.nanmax(box)
            d = max(abs(o[1] - r[1]) / TOL["score"], box / TOL["box_px"])
            if best_d is None or d < best_d:
                best, best_d = j, d
        if best >= 0 and best_d <= 1.0:
            used[best] = True
            pairs.append((i, best))
    if VERBOSE:
        done = {i for i, _ in pairs}
        for i, r in enumerate(ref_det):
            if i not in done:
                print(f"  unmatched ref #{i}: label {int(r[0])} score {r[1]:.5f} box {np.round(r[2:], 2)}")
        done = {j for _, j in pairs}
        for j, o in enumerate(our_det):
            if j not in done:
                print(f"  unmatched ours #{j}: label {int(o[0])} score {o[1]:.5f} box {np.round(o[2:], 2)}")
    box = max((np.nan_to_num(np.abs(our_det[j, 2:] - ref_det[i, 2:])).max() for i, j in pairs), default=0.0)
    score = max((abs(our_det[j, 1] - ref_det[i, 1]) for i, j in pairs), default=0.0)
    ious = [mask_iou(our_masks[j], ref_masks[i]) for i, j in pairs] if ref_masks is not None else []
    # the pairs under the IoU bar, with both masks' areas in pixels: (iou, reference area, our area)
    low = [(iou, int(ref_masks[i].sum()), int(our_masks[j].sum()))
           for iou, (i, j) in zip(ious, pairs, strict=False) if iou < TOL["mask_iou"]]  # no masks: no IoUs
    return {"ref": len(ref_det), "ours": len(our_det), "matched": len(pairs), "box": float(box),
            "score": float(score), "min_mask_iou": float(min(ious, default=1.0)),
            "mean_mask_iou": float(np.mean(ious)) if ious else 1.0, "low": low}


def instances_row(table: Table, name: str, stats: list[dict], extra: str = "") -> None:
    """One table row for the instances of every picture (``stats``: `match_instances`'s), ``extra`` added to its
    note."""
    ref = sum(s["ref"] for s in stats)
    matched = sum(s["matched"] for s in stats)
    ours = sum(s["ours"] for s in stats)
    box = max(s["box"] for s in stats)
    score = max(s["score"] for s in stats)
    miou = min(s["min_mask_iou"] for s in stats)
    mean_iou = float(np.mean([s["mean_mask_iou"] for s in stats]))
    ok = matched == ref == ours and miou >= TOL["mask_iou"]
    note = (f"matched {matched}/{ref} (ours {ours}); box {box:.3g} px; score {score:.2g}; "
            f"mask IoU min {miou:.4f} mean {mean_iou:.4f}")
    n_clip = sum(s.get("clipped", 0) for s in stats)
    if n_clip:
        note += f"; {n_clip} reference boxes clipped to the image first"
    table.add(name, box, score, ok, note + (f"; {extra}" if extra else ""))
