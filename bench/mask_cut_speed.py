"""The predictor's cost of masks cut to their boxes: ``two_step`` (cut between the steps, `paste_cut`) against
``direct`` (cut at the box in the picture), side by side.

    python bench/mask_cut_speed.py [--masks 100] [--repeats 5] [--threads 1] [--eager]

PP-YOLOE-seg-like output: stride-4 mask probabilities (160 x 160) over a 640 x 640 input for a 1333 x 800
picture (w x h, stretched to the square), boxes from 16 to 400 input pixels across, each mask a blob filling its
box. Printed: the crops (`postprocess_crops`, the pastes) and the whole post-processing (`postprocess`, to RLE)
for each geometry, with ``--eager`` also the eager model's whole-picture masks (`box_cropped_output`), each the
median of ``--repeats`` interleaved runs, with the ratio two_step / direct. NumPy's BLAS runs one thread unless
OPENBLAS_NUM_THREADS says otherwise: on a shared machine, the waits of its threads for each other swamp a paste's
few milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from instaseg.inference.postprocess import RawDetections, postprocess, postprocess_crops  # noqa: E402
from instaseg.models.common.masks import box_cropped_output  # noqa: E402
from instaseg.models.detector import RawOutput  # noqa: E402

IMAGE, SIZE, STRIDE = (800, 1333), (640, 640), 4


def boxes_and_masks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n,4] input-frame boxes and [n,160,160] probabilities of blobs filling them."""
    rng = np.random.default_rng(seed)
    side = np.exp(rng.uniform(np.log(16), np.log(400), (n, 2)))
    x0, y0 = rng.uniform(0, SIZE[1] - side[:, 0]), rng.uniform(0, SIZE[0] - side[:, 1])
    boxes = np.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], axis=1).astype(np.float32)
    low = SIZE[0] // STRIDE
    ys, xs = (np.arange(low, dtype=np.float32) + 0.5) * STRIDE, (np.arange(low, dtype=np.float32) + 0.5) * STRIDE
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rx, ry = side[:, 0] / 2, side[:, 1] / 2
    dist = np.hypot((xs[None, None] - cx[:, None, None]) / rx[:, None, None],
                    (ys[None, :, None] - cy[:, None, None]) / ry[:, None, None])  # fmt: skip
    logits = 6.0 * (1.0 - dist) + rng.normal(0, 0.5, dist.shape)
    return boxes, torch.from_numpy(logits.astype(np.float32)).sigmoid().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eager", action="store_true", help="also the eager model's [N,1,H,W] masks (GBs for 100)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    boxes, probs = boxes_and_masks(args.masks)
    ones, probs_t = np.ones(args.masks, np.float32), torch.from_numpy(probs)
    out = RawOutput(torch.from_numpy(boxes), torch.from_numpy(ones), torch.ones(args.masks, dtype=torch.long), probs_t)
    stages = ("crops", "to RLE", "eager") if args.eager else ("crops", "to RLE")
    runs: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up, untimed
        for mode in ("direct", "two_step"):
            layout = dict(mask_stride=STRIDE, mask_box_crop=True, mask_resample=mode)
            raw = RawDetections(boxes, ones, ones.astype(np.int64), probs, **layout)
            for stage in stages:
                start = time.perf_counter()
                if stage == "crops":
                    postprocess_crops(raw, SIZE, IMAGE)
                elif stage == "to RLE":
                    postprocess(raw, SIZE, IMAGE)
                else:
                    box_cropped_output(out, STRIDE, SIZE, IMAGE, resample=mode)
                if repeat:
                    runs.setdefault((stage, mode), []).append(time.perf_counter() - start)
    print(f"{args.masks} masks of {SIZE[0] // STRIDE} x {SIZE[1] // STRIDE}, {SIZE[1]} x {SIZE[0]} input, "
          f"{IMAGE[1]} x {IMAGE[0]} picture, median of {args.repeats} (range)")  # fmt: skip
    print(f"{'':8s} {'direct':>24s} {'two_step, cut between':>24s} {'ratio':>7s}")
    for stage in stages:
        cells, medians = [], []
        for mode in ("direct", "two_step"):
            times = runs[(stage, mode)]
            medians.append(statistics.median(times))
            cells.append(f"{medians[-1] * 1000:7.1f} ({min(times) * 1000:.0f}-{max(times) * 1000:.0f}) ms")
        print(f"{stage:8s} {cells[0]:>24s} {cells[1]:>24s} {medians[1] / medians[0]:6.2f}x")


if __name__ == "__main__":
    main()
