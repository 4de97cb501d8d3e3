"""SOLOv2 (`solov2_fast`) against `maskrcnn_fast` and `rtmdet_ins_tiny_fast` on the demo's synthetic shapes, after
EQUAL CPU TIME of training: mask AP, AP75 (boundary quality), box AP, and end-to-end latency per backend.

    python bench/solov2_vs_others.py OUT [--cpu-seconds 180] [--threads 1]

Equal CPU time, not equal wall time: other processes share this machine's cores, so wall time says more about
them than about the models. First every model's CPU seconds per training step (forward, backward, optimizer) are
measured in this one process with `time.process_time`, back to back on the same batches of its own recipe; then
each trains for the step count that fills the same CPU budget (``-o train.max_steps=N``), with flat-cosine
learning rates over those steps and validation only at the end. Scores come from `instaseg eval` on the val
split, latency from `instaseg benchmark --backend torch onnxruntime openvino` on the trained checkpoint.

Prints one table and writes OUT/comparison.json; a finished run in OUT is reused (delete it to redo).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

RECIPES = ("maskrcnn_fast", "rtmdet_ins_tiny_fast", "solov2_fast")
# every run the same way: the step budget governs (no wall-clock cap), the lr cools over it, one validation
COMMON = ["train.max_minutes=null", "train.lr_schedule=flat_cosine", "train.early_stop_patience=null"]
TIMED_STEPS, WARMUP_STEPS = 6, 2


def cpu_seconds_per_step(recipe_name: str, data: Path, threads: int) -> float:
    """CPU seconds of one training step of a recipe's model on its own batch size and input size."""
    from instaseg.data.coco import load_coco, split_file
    from instaseg.data.dataset import InstanceDataset, collate_fn
    from instaseg.data.pipeline import build_transforms
    from instaseg.engine.schedules import build_optimizer
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import load_recipe

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    recipe = load_recipe(recipe_name)
    coco = load_coco(split_file(data, "train"))
    dataset = InstanceDataset(coco, build_transforms(recipe["input"], recipe["train"], train=True))
    size = int(recipe["train"]["batch_size"])
    batches = [collate_fn([dataset[i * size + k] for k in range(size)]) for i in range(TIMED_STEPS + WARMUP_STEPS)]
    model = build_model(recipe, len(coco.categories), weights="none").train()
    optimizer = build_optimizer(model, recipe["train"])
    elapsed = 0.0
    for i, (images, targets) in enumerate(batches):
        start = time.process_time()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= WARMUP_STEPS:
            elapsed += time.process_time() - start
    return elapsed / TIMED_STEPS


def instaseg(*args: str) -> str:
    """Run the instaseg CLI in a child process (one torch thread, like the step timing) and return stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-m", "instaseg", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"instaseg {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train_and_score(recipe: str, steps: int, data: Path, out: Path) -> dict:
    """Train for ``steps`` (unless OUT/RECIPE holds a finished run) and score last.ckpt on val; returns the metrics
    and the step count the run was given."""
    folder = out / recipe
    if not (folder / "evaluate_result.json").is_file():
        # one validation, at the end: epochs and val_interval far beyond what the step budget reaches
        overrides = [*COMMON, f"train.max_steps={steps}", "train.epochs=1000", "train.val_interval=1000"]
        instaseg("train", "--model", recipe, "--data", str(data), "--out", str(folder), "--device", "cpu",
                 *[a for o in overrides for a in ("-o", o)])  # fmt: skip
        (folder / "bench_steps.json").write_text(json.dumps({"steps": steps}))
        instaseg("eval", "--checkpoint", str(folder / "last.ckpt"), "--data", str(data), "--split", "val",
                 "--out", str(folder))  # fmt: skip
    metrics = json.loads((folder / "evaluate_result.json").read_text())["metrics"]
    scores = {key: round(float(metrics[key]), 4) for key in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP")}
    return scores | json.loads((folder / "bench_steps.json").read_text())


def latency(checkpoint: Path, iters: int, threads: int) -> dict:
    backends = ["torch", "onnxruntime", "openvino"]
    raw = instaseg("benchmark", "--model", str(checkpoint), "--backend", *backends, "--iters", str(iters),
                   "--warmup", "3", "--threads", str(threads), "--json")  # fmt: skip
    rows = json.loads(raw)["backends"]
    return {name: round(rows[name]["end_to_end"]["median_ms"], 1) for name in backends}


def print_table(report: dict) -> None:
    head = f"{'model':<22}{'ms/step':>8}{'steps':>7}{'mask AP':>9}{'AP50':>7}{'AP75':>7}{'box AP':>8}"
    head += "".join(f"{b + ' ms':>16}" for b in ("torch", "onnxruntime", "openvino"))
    print(head)
    for name, run in report["runs"].items():
        line = f"{name:<22}{run['cpu_s_per_step'] * 1000:>8.0f}{run['steps']:>7}{run['mask_AP']:>9.3f}"
        line += f"{run['mask_AP50']:>7.3f}{run['mask_AP75']:>7.3f}{run['box_AP']:>8.3f}"
        line += "".join(f"{run['latency_ms'][b]:>16.1f}" for b in ("torch", "onnxruntime", "openvino"))
        print(line)
    print(f"CPU budget {report['cpu_seconds']:.0f} s of training per model, {report['threads']} torch thread(s);"
          f" latency: median end-to-end ms per 256 px image, load average {report['load_average']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu-seconds", type=float, default=180.0, help="training budget per model (CPU s)")
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
    costs = {name: cpu_seconds_per_step(name, data, args.threads) for name in RECIPES}
    report = {"cpu_seconds": args.cpu_seconds, "threads": args.threads, "runs": {}}
    for name in RECIPES:
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
