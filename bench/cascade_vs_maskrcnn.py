"""Cascade Mask R-CNN against Mask R-CNN at the same backbone and size (`cascade_maskrcnn_fast` vs `maskrcnn_fast`)
on the demo's synthetic shapes, trained for the same CPU time: mask AP, AP75 (where the cascade's high-IoU stages
should gain), box AP, and end-to-end latency per image on every backend.

    python bench/cascade_vs_maskrcnn.py OUT [--cpu-minutes 3] [--threads 1]

Equal CPU time, not equal wall time: other processes share this machine's cores, so wall time measures the load
as much as the model. In this process, each model's CPU seconds per training step (forward, backward, SGD step on
the same batches of 4 training pictures, models interleaved) are measured with `time.process_time`; each model
then trains for the step count that fills the same CPU budget (``-o train.max_steps=N``; the learning rate follows
the budget: warmup, flat, cosine), through `instaseg train`, and its final (EMA) weights are scored with
`instaseg eval` on the val split and timed with `instaseg benchmark --backend torch onnxruntime openvino`.
The CPU time each training run actually used (data worker and validation included) is reported beside it.

Prints one table and writes OUT/comparison.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

RECIPES = ("maskrcnn_fast", "cascade_maskrcnn_fast")
STEPS_PER_EPOCH = 80  # 320 training pictures in batches of 4
BACKENDS = ("torch", "onnxruntime", "openvino")


def _batches(data: Path, recipe: dict, count: int) -> list[tuple[list, list]]:
    """``count`` training batches of 4, with the training transforms (as `instaseg train` feeds them)."""
    from instaseg.data.coco import load_dataset
    from instaseg.data.dataset import InstanceDataset, collate_fn
    from instaseg.data.pipeline import build_transforms

    train = load_dataset(data)["train"]
    dataset = InstanceDataset(train, build_transforms(recipe["input"], recipe["train"], train=True), train=True)
    size = int(recipe["train"]["batch_size"])
    return [collate_fn([dataset[(b * size + i) % len(dataset)] for i in range(size)]) for b in range(count)]


def cpu_seconds_per_step(data: Path, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median CPU seconds of one training step per recipe, the recipes interleaved step by step."""
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import load_recipe

    recipes = {name: load_recipe(name) for name in RECIPES}
    batches = _batches(data, recipes[RECIPES[0]], warmup + steps)
    models, optimizers, times = {}, {}, {name: [] for name in RECIPES}
    for name, recipe in recipes.items():
        torch.manual_seed(0)
        models[name] = build_model(recipe, 3, weights="none").train()
        optimizers[name] = torch.optim.SGD(models[name].parameters(), lr=0.005, momentum=0.9)
    for i, (images, targets) in enumerate(batches):
        for name in RECIPES:
            start = time.process_time()
            loss = sum(models[name](images, targets).values())
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            if i >= warmup:
                times[name].append(time.process_time() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _instaseg(*args: str, threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "instaseg", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"instaseg {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_and_score(name: str, steps: int, data: Path, out: Path, threads: int) -> dict:
    """Train ``steps`` optimizer steps (unless OUT/NAME already holds them) and score the final weights."""
    folder = out / name
    epochs = math.ceil(steps / STEPS_PER_EPOCH)
    overrides = [
        "train.lr_schedule=flat_cosine",
        f"train.max_steps={steps}",
        f"train.epochs={epochs}",
        f"train.val_interval={epochs}",  # validate once, at the end: validation is not part of the budget
        "train.max_minutes=null",
    ]
    record = folder / "bench_train.json"  # a rerun reuses the finished training and its measured cost
    if not record.is_file():
        cpu_before, wall_before = _children_cpu(), time.monotonic()
        args = ["train", "--model", name, "--data", str(data), "--out", str(folder), "--weights", "none"]
        _instaseg(*args, *[a for o in overrides for a in ("-o", o)], threads=threads)
        cost = {"train_cpu_s": _children_cpu() - cpu_before, "train_wall_s": time.monotonic() - wall_before}
        record.write_text(json.dumps(cost))
    cost = json.loads(record.read_text())
    checkpoint = folder / "last.ckpt"
    _instaseg("eval", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "val",
              "--out", str(folder / "eval"), threads=threads)  # fmt: skip
    metrics = json.loads((folder / "eval" / "evaluate_result.json").read_text())["metrics"]
    return {
        "checkpoint": str(checkpoint),
        "steps": steps,
        **{k: round(v, 1) for k, v in cost.items()},
        **{k: round(metrics[k], 4) for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP75")},
    }


def _rows(result: dict) -> dict:
    return {
        backend: {
            "end_to_end_ms": round(row["end_to_end"]["median_ms"], 1),
            "model_ms": round(row["stages"]["model"]["median_ms"], 1),
            "detections": row["detections_per_image"],
        }
        for backend, row in result["backends"].items()
    }


def latency(checkpoint: str, data: Path, threads: int, iters: int) -> dict:
    """End-to-end latency per image on every backend: `instaseg benchmark` as a user runs it (its synthetic
    picture, on which these models may find nothing), and the same benchmark on 8 val pictures of the shapes,
    where each model keeps its real detections and so pays for their masks."""
    import numpy as np
    from PIL import Image

    from instaseg.deploy.benchmark import benchmark

    args = ["benchmark", "--model", checkpoint, "--backend", *BACKENDS, "--threads", str(threads)]
    cli = json.loads(_instaseg(*args, "--iters", str(iters), "--warmup", "3", "--json", threads=threads))
    val = json.loads((data / "annotations" / "instances_val.json").read_text())["images"][-8:]
    pictures = [np.asarray(Image.open(data / "images" / im["file_name"]).convert("RGB")) for im in val]
    shapes = benchmark(checkpoint, list(BACKENDS), iters=iters, warmup=3, threads=threads, pictures=pictures)
    return {"benchmark_cli": _rows(cli), "val_pictures": _rows(shapes)}


def table(report: dict) -> str:
    """One row per recipe: steps and CPU, accuracy, then end-to-end ms per backend (CLI picture / val pictures)."""
    head = f"{'recipe':<23}{'steps':>6}{'cpu s/step':>11}{'train cpu s':>12}{'mask AP':>8}{'AP75':>7}{'box AP':>7}"
    lines = [head + "".join(f"{b + ' ms cli/val':>24}" for b in BACKENDS)]
    for name, run in report["runs"].items():
        lat = run.get("latency", {})
        cells = [
            f"{lat['benchmark_cli'][b]['end_to_end_ms']:.1f} / {lat['val_pictures'][b]['end_to_end_ms']:.1f}"
            if lat
            else "-"
            for b in BACKENDS
        ]
        lines.append(
            f"{name:<23}{run['steps']:>6}{report['cpu_s_per_step'][name]:>11.3f}{run['train_cpu_s']:>12.0f}"
            f"{run['mask_AP']:>8.3f}{run['mask_AP75']:>7.3f}{run['box_AP']:>7.3f}" + "".join(f"{c:>24}" for c in cells)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu-minutes", type=float, default=3.0, help="training CPU budget per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a busy 2-core machine: 1)")
    parser.add_argument("--timing-steps", type=int, default=20, help="training steps timed per model")
    parser.add_argument("--iters", type=int, default=30, help="timed images per backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from instaseg.data.coco import split_file
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.engine.demo import DEMO_IMAGES, DEMO_IMG_SIZE, DEMO_STYLE

    data = args.out / "data"
    if not split_file(data, "train").is_file():  # the demo's data
        generate_synthetic(data, num_images=DEMO_IMAGES, img_size=DEMO_IMG_SIZE, seed=0, style=DEMO_STYLE)
    costs = args.out / "cpu_s_per_step.json"  # a rerun keeps the measured costs, and so the step counts
    if not costs.is_file():
        costs.write_text(json.dumps(cpu_seconds_per_step(data, args.timing_steps)))
    per_step = json.loads(costs.read_text())
    budget = args.cpu_minutes * 60
    report = {
        "cpu_budget_s": budget,
        "threads": args.threads,
        "cpu_s_per_step": {k: round(v, 4) for k, v in per_step.items()},
        "runs": {},
    }
    for name in RECIPES:
        steps = max(1, round(budget / per_step[name]))
        report["runs"][name] = train_and_score(name, steps, data, args.out, args.threads)
    for run in report["runs"].values():
        run["latency"] = latency(run["checkpoint"], data, args.threads, args.iters)
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
