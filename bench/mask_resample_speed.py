"""The cost of pasting image-frame masks with each ``mask_resample`` geometry, side by side.

    python bench/mask_resample_speed.py [--masks 100] [--repeats 5] [--threads 1]

RTMDet-Ins-like output: stride-8 mask logits on a 640 x 640 canvas for a 1920 x 1253 picture (resized x1/3),
masks of blobs from 8 to 160 px across, not cut to their boxes (so each paste is bounded by the mask's extent).
Printed: the shared post-processing (`postprocess`, to RLE) per geometry, and for the reference geometry the
reference's own way (tools/mmdet_conventions.py: every mask resampled over the whole picture), each the median of
``--repeats`` interleaved runs, with ratios to "direct".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from instaseg.inference.postprocess import RawDetections, postprocess

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from mmdet_conventions import canvas_masks  # noqa: E402

IMAGE, SIZE, CANVAS, STRIDE = (1253, 1920), (418, 640), 640, 8


def blob_logits(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = CANVAS // STRIDE
    ys, xs = np.mgrid[0:side, 0:side]
    radius = rng.uniform(0.5, 10, n)  # low-res pixels: 8 to 160 input pixels across
    cy, cx = rng.uniform(0, SIZE[0] / STRIDE, n), rng.uniform(0, side, n)
    dist = np.hypot(ys[None] - cy[:, None, None], xs[None] - cx[:, None, None])
    return (4.0 * (radius[:, None, None] - dist)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logits = blob_logits(args.masks)
    boxes = np.zeros((args.masks, 4), np.float32)
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for mode in ("direct", "canvas_rescale", "two_step"):
            layout = dict(mask_stride=STRIDE, mask_logits=True, mask_box_crop=False, mask_resample=mode)
            raw = RawDetections(boxes, np.ones(args.masks, np.float32), np.ones(args.masks, np.int64), logits, **layout)
            start = time.perf_counter()
            postprocess(raw, SIZE, IMAGE)
            runs.setdefault(mode, []).append(time.perf_counter() - start)
        start = time.perf_counter()
        scale = (SIZE[1] / IMAGE[1], SIZE[0] / IMAGE[0])
        for i in range(0, args.masks, 10):  # ten at a time: the whole-picture maps of all would need GBs
            canvas_masks(torch.from_numpy(logits[i : i + 10]), STRIDE, scale, IMAGE)
        runs.setdefault("reference canvas_masks (whole picture, no RLE)", []).append(time.perf_counter() - start)
    base = statistics.median(runs["direct"])
    print(f"{args.masks} masks, {IMAGE[0]} x {IMAGE[1]} picture, median of {args.repeats}")
    for name, times in runs.items():
        t = statistics.median(times)
        spread = f"{min(times) * 1000:.1f}-{max(times) * 1000:.1f}"
        print(f"{name:48s} {t * 1000:8.1f} ms  x{t / base:.2f}  (range {spread})")


if __name__ == "__main__":
    main()
