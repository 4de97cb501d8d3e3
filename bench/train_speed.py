"""Seconds per training iteration of zoo recipes at their own input size, on this machine, in one run.

    python bench/train_speed.py [maskrcnn_fast maskrcnn_r50_fpn ...] [--batch-size 2] [--iters 3] [--threads 2]

Each recipe is built from random weights with trainable BatchNorm (as a from-scratch run trains it) and takes
SGD steps on shapes pictures drawn at the recipe's input size (max_size x min_size), the same batches for every
recipe. One untimed step first (allocations, oneDNN kernel selection), then the median of ``--iters`` timed steps.
The load average is printed: timings on a busy machine compare with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2
import numpy as np
import torch

from instaseg.data.synthetic import SynthStyle, synth_image
from instaseg.data.transforms import boxes_from_masks
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe


def batch(recipe: dict, size: int, index: int) -> tuple[list[torch.Tensor], list[dict]]:
    """``size`` shapes pictures stretched to the recipe's input size, with their instances as targets."""
    height, width = recipe["input"]["min_size"], recipe["input"]["max_size"]
    images, targets = [], []
    for i in range(size):
        pixels, instances = synth_image(index * size + i, 256, seed=0, style=SynthStyle(background="plain"))
        pixels = cv2.resize(pixels, (width, height))
        masks = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST) for _, m in instances])
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        targets.append(
            {
                "boxes": boxes_from_masks(torch.from_numpy(masks)),
                "labels": torch.tensor([c + 1 for c, _ in instances]),
                "masks": torch.from_numpy(masks),
            }
        )
    return images, targets


def seconds_per_iteration(name: str, batch_size: int, iters: int) -> tuple[float, dict]:
    recipe = apply_overrides(load_recipe(name), ["model.norm=bn", "model.weights=none"])
    model = build_model(recipe, num_classes=SynthStyle().num_classes, weights="none").train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    times = []
    for step in range(iters + 1):
        images, targets = batch(recipe, batch_size, step)
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step pays for allocations and kernel selection
            times.append(time.perf_counter() - start)
    return statistics.median(times), recipe["input"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=["maskrcnn_fast", "maskrcnn_r50_fpn"])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.recipes:
        seconds, size = seconds_per_iteration(name, args.batch_size, args.iters)
        rows.append((name, seconds, size))
        print(f"{name:<24} {size['min_size']}x{size['max_size']}  {seconds:7.2f} s/iteration", flush=True)
    base = rows[0][1]
    print(f"batch {args.batch_size}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    for name, seconds, _ in rows[1:]:
        print(f"{name} / {rows[0][0]}: {seconds / base:.1f}x the time per iteration")


if __name__ == "__main__":
    main()
