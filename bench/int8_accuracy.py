"""INT8 against fp32 OpenVINO for every architecture's small recipe: mask and box AP, the drop, the speed-up and the
layers left in float, after training each recipe for the same step budget on the same data.

    python bench/int8_accuracy.py WORK [--recipes maskrcnn_fast ...] [--seeds 0 1] [--steps 800] [--threads 1]
        [--max-ap-drop 1.0] [--rounds 3] [--holdout-images 400] [--train-only]

Data: the demo's shapes (three classes, plain background, at most four per 256 px image; 320 train / 80 val), and
a second set drawn with another seed (``--holdout-images``, 400 by default) that nothing is tuned on, where the
table's AP is measured. 400, not the 80 of earlier tables: on 80 pictures the INT8 drop was noise at the size of the
1.0-point bar (Mask-RT-DETR seed 0: 1.9 points lost on those 80, 0.45 gained on the 80 val pictures, 0.55 lost on
400 others).
Training: each recipe from scratch for ``--steps`` optimizer steps (the demo's 800 by default), flat-cosine
learning rate over them, no validation, one run per seed; a finished run in WORK/<recipe>/seed<N>/ is reused, so
a rerun on changed code only exports and measures (delete the folder to train again).
Export: `instaseg export --format openvino` (fp32) and `--int8` as a user runs it: calibrated on the train split,
under accuracy control on the val split (mask AP, at most ``--max-ap-drop`` points lost) with the architecture's
own quantization settings (`Detector.quantization`).
Speed: median milliseconds per image of the network alone and end to end through the predictor, fp32 and INT8
timed in alternation (``--rounds`` passes over the held-out pictures each), the load average beside them, since
other processes share this machine's cores.

Prints one table and writes WORK/int8_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from instaseg.utils.io import atomic_write_json

RECIPES = (
    "maskrcnn_fast",
    "cascade_maskrcnn_fast",
    "rtmdet_ins_tiny_fast",
    "solov2_fast",
    "ppyoloe_seg_fast",
    "mask_rtdetr_fast",
)
# every recipe trains the same way: the step budget governs (no wall-clock cap), the lr cools over it
TRAIN_OVERRIDES = [
    "train.max_minutes=null",
    "train.lr_schedule=flat_cosine",
    "train.early_stop_patience=null",
    "train.epochs=1000",
    "train.val_interval=1000",
]
HOLDOUT_SEED = 1000
HOLDOUT_IMAGES = 400  # the held-out set's train split is scored: nothing trains or calibrates on it
TIMED_PICTURES = 80  # held-out pictures each timing round goes through


def instaseg(*args: str, threads: int) -> str:
    """The instaseg CLI in a child process with ``threads`` torch threads; returns stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "instaseg", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"instaseg {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def datasets(work: Path, holdout_images: int = HOLDOUT_IMAGES) -> tuple[Path, Path]:
    """The demo's data (train/val) and a held-out set of the same style drawn with another seed, whose train split
    (the first 80%) holds ``holdout_images`` pictures."""
    from instaseg.data.coco import split_file
    from instaseg.data.synthetic import TRAIN_SHARE, generate_synthetic
    from instaseg.engine.demo import DEMO_IMAGES, DEMO_IMG_SIZE, DEMO_STYLE

    data, holdout = work / "data", work / f"holdout{holdout_images}"
    if not split_file(data, "train").is_file():
        generate_synthetic(data, num_images=DEMO_IMAGES, img_size=DEMO_IMG_SIZE, seed=0, style=DEMO_STYLE)
    if not split_file(holdout, "val").is_file():
        pictures = round(holdout_images / TRAIN_SHARE)
        generate_synthetic(holdout, num_images=pictures, img_size=DEMO_IMG_SIZE, seed=HOLDOUT_SEED, style=DEMO_STYLE)
    return data, holdout


def train(recipe: str, seed: int, steps: int, data: Path, folder: Path, threads: int) -> Path:
    """``folder``/last.ckpt, trained unless a finished run of the same budget is there."""
    done = folder / "bench_train.json"
    if done.is_file() and json.loads(done.read_text())["steps"] == steps:
        return folder / "last.ckpt"
    overrides = [*TRAIN_OVERRIDES, f"train.max_steps={steps}", f"train.seed={seed}"]
    start = time.monotonic()
    instaseg("train", "--model", recipe, "--data", str(data), "--out", str(folder), "--device", "cpu",
             *[a for o in overrides for a in ("-o", o)], threads=threads)  # fmt: skip
    record = {"steps": steps, "seed": seed, "wall_s": round(time.monotonic() - start), "load": os.getloadavg()}
    done.write_text(json.dumps(record))
    return folder / "last.ckpt"


def holdout_ap(path: str | Path, gt: object) -> dict[str, float]:
    """Mask and box AP in points of an exported model on the held-out pictures, every detection kept."""
    import instaseg
    from instaseg.evaluation.parity import predictor_metrics

    metrics = predictor_metrics(instaseg.create_model(path, threshold=0.0), gt)
    return {"mask_AP": metrics["mask_AP"] * 100, "box_AP": metrics["box_AP"] * 100}


def end_to_end_ms(paths: dict[str, str], images: list, rounds: int) -> dict[str, list[float]]:
    """Per round, the median milliseconds per picture of each model through the predictor; the models take
    turns picture by picture, so a change of load touches each alike."""
    import instaseg

    predictors = {name: instaseg.create_model(path, threshold=0.0) for name, path in paths.items()}
    for predictor in predictors.values():  # compile and warm up outside the timing
        next(predictor.predict(images[0]))
    medians: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in paths}
        for image in images:
            for name, predictor in predictors.items():
                start = time.perf_counter()
                next(predictor.predict(image))
                times[name].append(time.perf_counter() - start)
        for name in paths:
            medians[name].append(statistics.median(times[name]) * 1000)
    return medians


def measure(ckpt: Path, data: Path, holdout: Path, folder: Path, max_drop: float, rounds: int) -> dict:
    """fp32 and INT8 OpenVINO exports of ``ckpt``: AP on the held-out set, the INT8 report, end-to-end speed."""
    from instaseg.data.coco import split_file
    from instaseg.evaluation.parity import validation_subset
    from instaseg.export import export_model
    from instaseg.utils.images import read_image

    fp32 = export_model(ckpt, format="openvino", out=folder / "fp32")["path"]
    int8 = export_model(
        ckpt, format="openvino", out=folder / "int8", int8=True, calib_data=data, max_ap_drop=max_drop
    )
    gt = validation_subset(split_file(holdout, "train"))
    images = [read_image(gt.image_path(record)) for record in gt.images]
    paths = {"fp32": fp32, "int8": int8["path"]}
    report = int8["report"]
    return {
        "holdout": {name: holdout_ap(path, gt) for name, path in paths.items()},
        "val": report["accuracy"],
        "float_layers": len(report["float_layers"]),
        "quantizable_layers": report["quantizable_layers"],
        "network_ms": report["network_ms"],
        "end_to_end_ms": end_to_end_ms(paths, images[:TIMED_PICTURES], rounds),
        "holdout_pictures": len(gt.images),
        "load": os.getloadavg(),
    }


def table(rows: dict[str, dict]) -> str:
    head = (
        f"{'recipe / seed':<28} {'mask AP fp32':>12} {'int8':>6} {'drop':>6} {'box AP fp32':>11} {'int8':>6} "
        f"{'float':>7} {'net ms fp32':>11} {'int8':>6} {'e2e ms fp32':>13} {'int8':>13} {'speed-up':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        before, after = r["holdout"]["fp32"], r["holdout"]["int8"]
        e2e = r["end_to_end_ms"]
        ranges = {k: f"{min(v):.0f}-{max(v):.0f}" for k, v in e2e.items()}
        speedup = statistics.median(e2e["fp32"]) / statistics.median(e2e["int8"])
        lines.append(
            f"{name:<28} {before['mask_AP']:>12.1f} {after['mask_AP']:>6.1f} "
            f"{before['mask_AP'] - after['mask_AP']:>6.1f} {before['box_AP']:>11.1f} {after['box_AP']:>6.1f} "
            f"{r['float_layers']:>3}/{r['quantizable_layers']:<3} {r['network_ms']['fp32']:>11.1f} "
            f"{r['network_ms']['int8']:>6.1f} {ranges['fp32']:>13} {ranges['int8']:>13} {speedup:>8.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps of training per run")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenVINO threads")
    parser.add_argument("--max-ap-drop", type=float, default=1.0, help="INT8 export: mask AP points it may lose")
    parser.add_argument("--rounds", type=int, default=3, help="timing passes over the held-out pictures")
    parser.add_argument("--holdout-images", type=int, default=HOLDOUT_IMAGES, help="held-out pictures scored")
    parser.add_argument("--train-only", action="store_true", help="train (or find) the checkpoints, then stop")
    args = parser.parse_args()
    data, holdout = datasets(args.work, args.holdout_images)
    rows: dict[str, dict] = {}
    for recipe in args.recipes:
        for seed in args.seeds:
            folder = args.work / recipe / f"seed{seed}"
            ckpt = train(recipe, seed, args.steps, data, folder, args.threads)
            print(f"{recipe} seed {seed}: {ckpt}", flush=True)
            if not args.train_only:
                rows[f"{recipe} / {seed}"] = measure(ckpt, data, holdout, folder, args.max_ap_drop, args.rounds)
    if rows:
        atomic_write_json(args.work / "int8_accuracy.json", rows)
        scored = sorted({r["holdout_pictures"] for r in rows.values()})
        print(f"load average {os.getloadavg()[0]:.1f} (1 min); AP on {'/'.join(map(str, scored))} held-out pictures; "
              f"e2e: range of per-round medians over {args.rounds} rounds")
        print(table(rows))


if __name__ == "__main__":
    main()
