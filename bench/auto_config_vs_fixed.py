"""Mask AP of the fixed recipe vs dataset-aware configuration (with tiling where chosen), over seeds.

Datasets: the small-object synthetic style (`instaseg data synth --style small-objects`) and, when present,
../shared/datasets/tiny_coco. For each dataset and seed, the same recipe trains twice with the same budget:
``--auto off`` (the recipe as written) and auto (input size, tiling, anchors, detections per image fitted to the
data). Prints mean +- std of val mask AP per arm and whether the gap exceeds the spread. With --memory, also
predicts one 8000 x 8000 picture holding 5,000 small objects on tiles and prints the peak RSS.

    python3 bench/auto_config_vs_fixed.py --seeds 0 1 2 --minutes 3
    python3 bench/auto_config_vs_fixed.py --datasets small_objects --seeds 0 1 2 --minutes 3
    python3 bench/auto_config_vs_fixed.py --memory-only
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_COCO = REPO.parent / "shared" / "datasets" / "tiny_coco"


def _train_ap(recipe: str, data: Path, out: Path, seed: int, minutes: float, auto: bool) -> float:
    from instaseg.engine.train import train

    overrides = [f"train.seed={seed}", f"train.max_minutes={minutes}", "train.num_workers=0", "train.epochs=100"]
    result = train(recipe, data, out=out, device="cpu", overrides=overrides, auto=auto)
    return float(result["best_metrics"].get("mask_AP", float("nan")))


def _datasets(work: Path, images: int, names: list[str]) -> dict[str, Path]:
    from instaseg.data.synthetic import generate_synthetic, small_objects_style

    out = {}
    if "small_objects" in names:
        style = small_objects_style(2, "plain")
        out["small_objects"] = generate_synthetic(work / "small", images, seed=7, style=style)
    if "tiny_coco" in names and (TINY_COCO / "annotations" / "instances_train.json").is_file():
        out["tiny_coco"] = TINY_COCO
    return out


def compare(recipe: str, seeds: list[int], minutes: float, images: int, names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, data in _datasets(work, images, names).items():
            arms: dict[str, list[float]] = {"fixed": [], "auto": []}
            for seed in seeds:
                for arm in arms:
                    out = work / f"{name}-{arm}-{seed}"
                    arms[arm].append(_train_ap(recipe, data, out, seed, minutes, auto=arm == "auto"))
                    print(f"{name} seed {seed} {arm}: mask AP {arms[arm][-1]:.4f}", flush=True)
            means = {a: statistics.mean(v) for a, v in arms.items()}
            spread = max(statistics.pstdev(v) for v in arms.values())
            gap = means["auto"] - means["fixed"]
            print(
                f"{name}: fixed {means['fixed']:.4f} auto {means['auto']:.4f} gap {gap:+.4f} "
                f"(largest std {spread:.4f}; gap {'exceeds' if abs(gap) > 2 * spread else 'within'} 2 std)"
            )


def memory_check(size: int = 8000, objects: int = 5000) -> None:
    """Tiled prediction of a size x size picture with ``objects`` 12 px squares through a random-init model."""
    from instaseg.inference.backends.torch import TorchBackend
    from instaseg.inference.predictor import Predictor
    from instaseg.inference.tiling import TilingOptions
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 40, dtype=np.uint8)
    for x, y in rng.integers(0, size - 12, (objects, 2)):
        image[y : y + 12, x : x + 12] = 220
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["eval.max_dets=200", "model.rpn_post_nms_top_n_test=400"])
    model = build_model(recipe, num_classes=1, weights="none").eval()
    model.make_outputs_busy()
    options = TilingOptions(size=512, overlap=0.1, max_dets=objects * 2)
    predictor = Predictor(TorchBackend(model, torch.device("cpu")), ["square"], threshold=0.0, tiling=options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = next(predictor.predict(image))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    full_masks_gb = len(result) * size * size / 1e9
    print(f"{size}x{size}: {len(result)} instances kept; peak RSS {peak:.0f} MB (before predicting {before:.0f} MB; "
          f"one image-sized byte mask per instance would be {full_masks_gb:.0f} GB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="maskrcnn_fast")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per run")
    parser.add_argument("--images", type=int, default=20, help="synthetic images (80/20 train/val)")
    parser.add_argument("--datasets", nargs="+", choices=("small_objects", "tiny_coco"), default=["small_objects",
                        "tiny_coco"])  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="also run the 8000 x 8000 memory check")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.memory_only:
        compare(args.recipe, args.seeds, args.minutes, args.images, args.datasets)
    if args.memory or args.memory_only:
        memory_check()


if __name__ == "__main__":
    main()
