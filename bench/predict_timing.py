"""Prediction timing, stage by stage, and our mask pasting against torchvision's.

    python bench/predict_timing.py [--recipe maskrcnn_r50_fpn] [--images 3] [--threads N]

The model is a random-init ResNet-50-FPN Mask R-CNN at 800x1333 (no weights are downloaded). To make the
post-processing do realistic work, the score threshold is 0 (so the head keeps its 100 best boxes per image, as a
trained model on a busy COCO image would) and the mask logits are centred near zero (so masks are partly filled,
not empty). Pictures come from ../shared/datasets/tiny_coco when present, else smooth noise.

Printed: per-stage mean time and share; then, on the same detections, torchvision's `paste_masks_in_image` (all
masks at full size, then thresholded and RLE-encoded one by one, which a json output needs) against ours (each
mask resized in its box and encoded from the crop), with the ratio and the memory each needs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

import instaseg
from instaseg.inference.postprocess import masks_to_rles, scale_boxes
from instaseg.inference.preprocess import preprocess
from instaseg.models.checkpoint import save_checkpoint
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe

TINY_COCO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny_coco" / "images"


def load_pictures(count: int, height: int, width: int) -> list[np.ndarray]:
    paths = sorted(TINY_COCO.glob("*.jpg"))[:count] if TINY_COCO.is_dir() else []
    pictures = [cv2.resize(cv2.imread(str(p))[..., ::-1], (width, height)) for p in paths]
    rng = np.random.default_rng(0)
    while len(pictures) < count:
        noise = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        pictures.append(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))
    return pictures


def make_predictor(recipe_name: str, size: tuple[int, int], folder: Path):
    recipe = apply_overrides(
        load_recipe(recipe_name),
        [f"input.min_size={min(size)}", f"input.max_size={max(size)}", "eval.score_threshold=0.0", "eval.max_dets=100"],
    )
    torch.manual_seed(0)
    model = build_model(recipe, 80, weights="none")
    with torch.no_grad():  # partly filled masks instead of the near-empty ones of a random head
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(0.8)
    path = save_checkpoint(folder / "bench.pt", model, recipe, [f"c{i}" for i in range(80)], list(range(1, 81)))
    return instaseg.create_model(path, threshold=0.0)


def time_stages(predictor, pictures: list[np.ndarray]) -> None:
    next(predictor.predict(pictures[0]))  # warm-up: first-call allocations are not what a user waits for
    predictor.reset_timings()
    counts = [len(r) for r in predictor.predict(pictures)]
    print(f"{len(pictures)} images {pictures[0].shape[1]}x{pictures[0].shape[0]}, detections per image: {counts}")
    for stage, s in predictor.timing_summary().items():
        print(f"  {stage:<12} {s['mean_s'] * 1000:9.1f} ms/image  {s['share'] * 100:5.1f} %")


def _tv_paste_and_encode(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> list[dict]:
    pasted = paste_masks_in_image(torch.from_numpy(masks[:, None]), torch.from_numpy(boxes), size)[:, 0] > 0.5
    return [mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8))) for m in pasted]


def model_detections(predictor, picture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low-res masks and boxes (original pixels) of one picture, straight from the backend."""
    batch, sizes = preprocess([picture], predictor.backend.spec)
    raw = predictor.backend(batch, sizes)[0]
    return raw.masks, scale_boxes(raw.boxes, sizes[0], picture.shape[:2])


def synthetic_detections(masks: np.ndarray, size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same masks on boxes of COCO-like spread: side log-uniform from 16 px to 3/4 of the image."""
    rng = np.random.default_rng(seed)
    n, (h, w) = len(masks), size
    side = np.exp(rng.uniform(np.log(16), np.log(0.75 * min(h, w)), n))
    aspect = np.exp(rng.uniform(-0.7, 0.7, n))
    bw, bh = np.minimum(side * aspect, w - 1), np.minimum(side / aspect, h - 1)
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return masks, np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)


def compare_pasting(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], title: str, repeats: int = 3) -> None:
    n = len(boxes)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    ours = best(lambda: masks_to_rles(masks, boxes, size))
    tv_paste = best(lambda: paste_masks_in_image(torch.from_numpy(masks[:, None]), torch.from_numpy(boxes), size))
    tv_total = best(lambda: _tv_paste_and_encode(masks, boxes, size))
    same = sum(
        a["counts"] == b["counts"].decode()
        for a, b in zip(masks_to_rles(masks, boxes, size), _tv_paste_and_encode(masks, boxes, size), strict=True)
    )
    full_mb = n * size[0] * size[1] * 4 / 1e6
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    mask_area = [
        mask_utils.area({"size": r["size"], "counts": r["counts"].encode()}) for r in masks_to_rles(masks, boxes, size)
    ]
    print(f"mask pasting, {title}: {n} detections on {size[1]}x{size[0]} (best of {repeats}):")
    print(
        f"  boxes: median {np.median(np.sqrt(box_area)):.0f} px side, max {np.sqrt(box_area.max()):.0f} px; masks fill "
        f"{np.sum(mask_area) / np.sum(box_area) * 100:.0f} % of their boxes"
    )
    held = f"(holds {full_mb:.0f} MB of float masks)"
    print(f"  torchvision paste_masks_in_image           {tv_paste * 1000:8.1f} ms  {held}")
    print(f"  torchvision paste + threshold + RLE encode {tv_total * 1000:8.1f} ms")
    print(f"  ours: paste in box + RLE from crop         {ours * 1000:8.1f} ms  (one box-sized mask at a time)")
    print(f"  ratio torchvision/ours: paste only {tv_paste / ours:.1f}x, paste+encode {tv_total / ours:.1f}x")
    print(f"  identical RLE for {same}/{n} instances")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="maskrcnn_r50_fpn")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}, cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        predictor = make_predictor(args.recipe, (800, 1333), Path(tmp))
    print(predictor)
    pictures = load_pictures(args.images, 800, 1333)
    time_stages(predictor, pictures)
    masks, boxes = model_detections(predictor, pictures[0])
    compare_pasting(masks, boxes, pictures[0].shape[:2], "the model's detections")
    compare_pasting(*synthetic_detections(masks, pictures[0].shape[:2]), pictures[0].shape[:2], "COCO-like box sizes")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
