"""RTMDet-Ins-tiny against the fast Mask R-CNN recipe on the synthetic shapes: mask AP after the same training
time, and end-to-end latency per image on every backend. All runs go back to back in the same conditions:
RTMDet-Ins-tiny with its published recipe (AdamW, flat-cosine, EMA, Mosaic + MixUp) at 256 px, the same with the
fast recipe's light augmentation (what `rtmdet_ins_tiny_fast` ships), and `maskrcnn_fast`.

    python bench/rtmdet_vs_maskrcnn.py OUT [--minutes 8] [--threads 1]

Prints one table and writes OUT/comparison.json. The machine's load average is reported with the numbers:
timings taken on a busy machine compare with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

# RTMDet-Ins-tiny at the fast recipe's 256 px, batch, warmup and workers (its lr and warmup stated for that batch of
# 4, as the fast recipe's); the rest is its published recipe
RTMDET = [
    "model.weights=none",  # from scratch, as the fast recipe (the published start downloads CSPNeXt ImageNet weights)
    "input.min_size=256",
    "input.max_size=256",
    "train.batch_size=4",
    "train.base_batch=4",
    "train.warmup_iters=100",
    "train.num_workers=1",
    "train.epochs=300",
]
# for budgets of minutes: the fast recipe's augmentation (no Mosaic / MixUp / colour jitter), same optimizer
RTMDET_LIGHT = [
    *RTMDET,
    "train.mosaic=false",
    "train.mixup=false",
    "train.photometric=false",
    "train.scale_jitter=[0.8, 1.25]",
]
MASKRCNN: list[str] = []
# run name -> (recipe, overrides, time the latency too)
RUNS = {
    "rtmdet_ins_tiny": ("rtmdet_ins_tiny", RTMDET, True),
    "maskrcnn_fast": ("maskrcnn_fast", MASKRCNN, True),
    "rtmdet_ins_tiny_light_aug": ("rtmdet_ins_tiny", RTMDET_LIGHT, True),
}


def train_and_score(run: str, recipe: str, overrides: list[str], data: Path, out: Path, minutes: float) -> dict:
    """Train (unless OUT/RUN already holds a finished, scored run) and score the best checkpoint on val."""
    from instaseg.engine.evaluate import evaluate
    from instaseg.engine.train import train
    from instaseg.utils.io import read_json

    folder = out / run
    if not (folder / "evaluate_result.json").is_file():
        train(recipe, data, out=folder, overrides=[*overrides, f"train.max_minutes={minutes}"])
        evaluate(folder / "best.ckpt", data, split="val", out=folder)
    metrics = read_json(folder / "evaluate_result.json")["metrics"]
    result = read_json(folder / "train_result.json")
    return {
        "checkpoint": str(folder / "best.ckpt"),
        "steps": result.get("global_step") or result.get("steps"),
        "epochs": result.get("epochs_completed"),
        "mask_AP": metrics["mask_AP"],
        "box_AP": metrics["box_AP"],
        "mask_AP50": metrics["mask_AP50"],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def latency(checkpoint: str, data: Path, iters: int) -> dict:
    import numpy as np
    from PIL import Image

    from instaseg.deploy.benchmark import benchmark

    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((data / "images").glob("*"))[-8:]]
    result = benchmark(
        checkpoint,
        backends=["torch", "onnxruntime", "openvino"],
        iters=iters,
        warmup=3,
        threshold=0.3,
        pictures=pictures,
    )
    return {
        name: {
            "end_to_end_ms": round(r["end_to_end"]["median_ms"], 1),
            "model_ms": round(r["stages"]["model"]["median_ms"], 1),
            "images_per_s": round(r["images_per_s"], 2),
        }
        for name, r in result["backends"].items()
    } | {"load_average": [round(v, 2) for v in result["load_average"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a busy 2-core machine: 1)")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from instaseg.data.coco import split_file
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.engine.demo import DEMO_IMAGES, DEMO_IMG_SIZE, DEMO_STYLE

    data = args.out / "data"
    if not split_file(data, "train").is_file():  # the demo's data
        generate_synthetic(data, num_images=DEMO_IMAGES, img_size=DEMO_IMG_SIZE, seed=0, style=DEMO_STYLE)
    report = {"minutes": args.minutes, "threads": args.threads, "runs": {}}
    for run, (recipe, overrides, _) in RUNS.items():
        report["runs"][run] = train_and_score(run, recipe, overrides, data, args.out, args.minutes)
    for run, (_, _, timed) in RUNS.items():
        if timed:
            report["runs"][run]["latency"] = latency(report["runs"][run]["checkpoint"], data, args.iters)
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
