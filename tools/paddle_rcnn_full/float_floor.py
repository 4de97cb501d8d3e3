"""How far float32 itself moves the final instances: our model on the reference's input tensor in float32 and in
float64 (the same converted weights), each compared with the other and with the reference (which runs in float32
only: PaddleDetection's `generate_proposals` has no float64 kernel).

    PYTHONPATH=src python3 tools/paddle_rcnn_full/float_floor.py RUNS/maskrcnn_r101vd_fpn_cv51 [--json out.json]

Rows, with the issue's tolerances (box corners 0.5 px, scores 1e-3, per-instance mask IoU 0.99):
- ours float32 vs the reference: compare_rcnn.py's "instances, same input" row;
- ours float32 vs ours float64: the same code and weights, only the arithmetic's precision differs;
- the reference vs ours float64;
and where ref_float64.py has written the reference's own float64 run (ref64.npz):
- the reference float32 vs the reference float64;
- ours float64 vs the reference float64: both sides with float32's rounding out of the way but in the reference's
  proposals (its float32 kernel decodes them: a few float32 steps, up to 2.4e-4 px, from ours);
- ours float64 on the reference float64's proposals vs the reference float64: the rest of the path (box head, NMS,
  mask head, paste) with no float32 left on either side.
Each note lists the pairs under the IoU bar with both masks' areas in pixels: if our own float32 output misses the
bar against our float64 output on masks of that size, the bar there is below what float32 can hold.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from contextlib import contextmanager

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_rcnn import (  # noqa: E402
    PADDLEX_RECIPE,
    build_ours,
    load_published_file,
    open_run,
    reference_instances,
    same_input_instances,
)
from table import Table, instances_row, match_instances  # noqa: E402

torch.set_grad_enabled(False)


@contextmanager
def given_proposals(model, proposals: np.ndarray):
    """The model's RPN answers with ``proposals`` (the network input's frame, the reference's order)."""
    hook = model.rpn.register_forward_hook(lambda m, i, o: ([torch.from_numpy(proposals)], o[1]))
    try:
        yield
    finally:
        hook.remove()


def low_pairs(stats: list[dict]) -> str:
    """The pairs under the IoU bar as 'IoU (reference area / our area px)', worst first."""
    low = sorted(p for s in stats for p in s["low"])
    return ", ".join(f"{iou:.3f} ({a}/{b} px)" for iou, a, b in low) or "none"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--json")
    args = ap.parse_args()
    meta, ref = open_run(args.run)
    ref64_path = os.path.join(args.run, "ref64.npz")
    ref64 = np.load(ref64_path) if os.path.exists(ref64_path) else None
    model, over, recipe = build_ours(meta, [])
    load_published_file(model, recipe, args.run, PADDLEX_RECIPE.get(meta["model"], meta["model"]))
    model.eval()
    model64 = copy.deepcopy(model).double()
    rows = {"ours float32 vs the reference": [], "ours float32 vs ours float64": [],
            "the reference vs ours float64": []}
    for b in range(sum(1 for k in ref.files if k.endswith(".input"))):
        theirs = reference_instances(ref, b)
        ours32 = same_input_instances(model, ref, meta, b)[1:]
        ours64 = same_input_instances(model64, ref, meta, b, torch.float64)[1:]
        rows["ours float32 vs the reference"].append(match_instances(*theirs, *ours32))
        rows["ours float32 vs ours float64"].append(match_instances(*ours64, *ours32))
        rows["the reference vs ours float64"].append(match_instances(*ours64, *theirs))
        if ref64 is not None:
            theirs64 = reference_instances(ref64, b)
            rows.setdefault("the reference float32 vs the reference float64", []).append(
                match_instances(*theirs64, *theirs))
            rows.setdefault("ours float64 vs the reference float64", []).append(match_instances(*theirs64, *ours64))
            with given_proposals(model64, ref64[f"{b}.proposals"].astype(np.float64)):
                on_theirs = same_input_instances(model64, ref, meta, b, torch.float64)[1:]
            rows.setdefault("ours float64 on the reference float64's proposals vs the reference float64", []).append(
                match_instances(*theirs64, *on_theirs))
    table = Table(f"{meta['model']} ({meta['paddlex']}): float32 against float64 on the reference's input tensor; "
                  f"ours: {' '.join(over)}")
    for name, stats in rows.items():
        instances_row(table, name, stats, f"under the bar: {low_pairs(stats)}")
    table.report(args.json)


if __name__ == "__main__":
    main()
