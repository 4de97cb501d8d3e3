"""Any recipes side by side on the demo's synthetic shapes, after EQUAL CPU TIME of training: mask AP, AP75, box
AP, and end-to-end latency per backend (torch, ONNX Runtime, OpenVINO).

    python bench/compare_architectures.py OUT --recipes ppyoloe_seg_fast rtmdet_ins_tiny_fast maskrcnn_fast \
        [--cpu-seconds 180] [--threads 1] [--iters 30]

The method is bench/solov2_vs_others.py's, for the recipes named on the command line: each recipe's CPU seconds
per training step are measured in this process (`time.process_time`, same batches of its own recipe), then each
trains for the step count that fills the same CPU budget (flat-cosine over those steps, one validation at the
end), is scored by `instaseg eval` on the val split and timed by `instaseg benchmark`.

Prints one table and writes OUT/comparison.json; a finished run of a recipe in OUT is reused (delete it to redo).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from solov2_vs_others import cpu_seconds_per_step, latency, train_and_score

BACKENDS = ("torch", "onnxruntime", "openvino")


def print_table(report: dict) -> None:
    width = max(22, *(len(name) + 2 for name in report["runs"]))
    head = f"{'recipe':<{width}}{'ms/step':>8}{'steps':>7}{'mask AP':>9}{'AP50':>7}{'AP75':>7}{'box AP':>8}"
    print(head + "".join(f"{b + ' ms':>16}" for b in BACKENDS))
    for name, run in report["runs"].items():
        line = f"{name:<{width}}{run['cpu_s_per_step'] * 1000:>8.0f}{run['steps']:>7}{run['mask_AP']:>9.3f}"
        line += f"{run['mask_AP50']:>7.3f}{run['mask_AP75']:>7.3f}{run['box_AP']:>8.3f}"
        print(line + "".join(f"{run['latency_ms'][b]:>16.1f}" for b in BACKENDS))
    print(f"CPU budget {report['cpu_seconds']:.0f} s of training per recipe, {report['threads']} torch thread(s);"
          f" latency: median end-to-end ms per 256 px image, load average {report['load_average']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--recipes", nargs="+", required=True, help="recipe names (or yaml paths) to compare")
    parser.add_argument("--cpu-seconds", type=float, default=180.0, help="training budget per recipe (CPU s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from instaseg.data.coco import split_file
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.engine.demo import DEMO_IMAGES, DEMO_IMG_SIZE, DEMO_STYLE

    data = args.out / "data"
    if not split_file(data, "train").is_file():  # the demo's data
        generate_synthetic(data, num_images=DEMO_IMAGES, img_size=DEMO_IMG_SIZE, seed=0, style=DEMO_STYLE)
    costs = {name: cpu_seconds_per_step(name, data, args.threads) for name in args.recipes}
    report = {"cpu_seconds": args.cpu_seconds, "threads": args.threads, "runs": {}}
    for name in args.recipes:
        steps = max(1, round(args.cpu_seconds / costs[name]))
        run = {"cpu_s_per_step": round(costs[name], 4)} | train_and_score(name, steps, data, args.out)
        run["latency_ms"] = latency(args.out / name / "last.ckpt", args.iters, args.threads)
        report["runs"][name] = run
        print(name, json.dumps(run), flush=True)
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()
