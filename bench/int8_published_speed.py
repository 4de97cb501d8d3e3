"""INT8 against fp32 OpenVINO at the published sizes, random weights: what quantization buys each architecture's
real-size network on this CPU.

    python bench/int8_published_speed.py [--recipes maskrcnn_r50_fpn ...] [--instances 10] [--rounds 3]
        [--pictures 4] [--calib 20] [--threads 2] [--work /tmp/instaseg_int8_speed]

Each recipe is built with random weights and made to output ``--instances`` per picture (`fixed_instances`: the
mask branch runs, and calibration finds detections), at its own short side: 640 for the one-stage models and
Mask-RT-DETR, 800 for the R-CNN family and SOLOv2 (square tiny_coco pictures, so the static graph is 800 x 800
where COCO pictures would be about 800 x 1200). Exported to OpenVINO fp32 and INT8 (NNCF with the architecture's
`QuantizationSettings`, calibrated on ``--calib`` other pictures; no accuracy control: random weights have no AP
to keep, see bench/int8_accuracy.py for trained models). Timed through the predictor, fp32 and INT8 in
alternation over ``--rounds`` passes; the table gives the range of the passes' medians (network alone and end to
end), the speed-up of their medians, the IR sizes and the load average, since other processes share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixed_instances import export_fixed, square_pictures  # noqa: E402
from peer_speed import our_predictor, time_ours  # noqa: E402

RECIPES = (
    "maskrcnn_r50_fpn",
    "cascade_maskrcnn_r50_fpn",
    "rtmdet_ins_tiny",
    "rtmdet_ins_s",
    "solov2_r50_fpn",
    "ppyoloe_seg_s",
    "mask_rtdetr_s",
    "mask_rtdetr_l",
)
PRECISIONS = ("fp32", "int8")


def short_side(recipe_name: str) -> int:
    from instaseg.models.recipes import load_recipe

    return int(load_recipe(recipe_name)["input"]["min_size"])


def measure(recipe: str, args: argparse.Namespace) -> dict:
    size = short_side(recipe)
    squares = square_pictures(args.pictures + args.calib, size)
    pictures, calib = squares[: args.pictures], squares[args.pictures :]
    xmls = {p: export_fixed(recipe, args.instances, p, args.work, calib if p == "int8" else None, size=size)
            for p in PRECISIONS}  # fmt: skip
    predictors = {p: our_predictor(xml, args.threads)[0] for p, xml in xmls.items()}
    for predictor in predictors.values():
        time_ours(predictor, pictures[:1])  # warm-up
    runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    loads = []
    for i in range(args.rounds):
        for p in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
            runs[p].append(time_ours(predictors[p], pictures))
        loads.append(os.getloadavg()[0])
    row = {"recipe": recipe, "size": size, "load": [min(loads), max(loads)]}
    for p in PRECISIONS:
        medians = {f: [statistics.median(r[f]) for r in runs[p]] for f in ("model_ms", "end_to_end_ms")}
        row[p] = {f: [min(v), max(v), statistics.median(v)] for f, v in medians.items()}
        row[p]["detections"] = sorted({d for r in runs[p] for d in r["detections"]})
        row[p]["ir_mb"] = xmls[p].with_suffix(".bin").stat().st_size / 1e6
    row["speedup_model"] = row["fp32"]["model_ms"][2] / row["int8"]["model_ms"][2]
    row["speedup_end_to_end"] = row["fp32"]["end_to_end_ms"][2] / row["int8"]["end_to_end_ms"][2]
    return row


def fmt(span: list[float]) -> str:
    return f"{span[0]:.0f}-{span[1]:.0f}"


def print_row(row: dict) -> None:
    f, q = row["fp32"], row["int8"]
    print(
        f"| {row['recipe']} | {row['size']} | {fmt(f['model_ms'])} | {fmt(q['model_ms'])} | "
        f"{row['speedup_model']:.2f}x | {fmt(f['end_to_end_ms'])} | {fmt(q['end_to_end_ms'])} | "
        f"{row['speedup_end_to_end']:.2f}x | {f['ir_mb']:.0f} / {q['ir_mb']:.0f} | {f['detections']} / "
        f"{q['detections']} | {row['load'][0]:.1f}-{row['load'][1]:.1f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pictures", type=int, default=4)
    parser.add_argument("--calib", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/instaseg_int8_speed"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"OpenVINO, {args.threads} threads, {args.instances} instances per picture, {args.pictures} pictures, "
          f"{args.rounds} alternating rounds; ms per picture, range of the rounds' medians")  # fmt: skip
    print("| recipe | px | network fp32 | network INT8 | speed-up | end to end fp32 | end to end INT8 | speed-up | "
          "IR MB fp32 / INT8 | detections | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for recipe in args.recipes:
        rows.append(measure(recipe, args))
        print_row(rows[-1])
        (args.work / "int8_published_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
