"""The model zoo as `instaseg models` shows it: every number is measured from the built model, never typed in.

For each recipe the detector is built with random initialisation on the CPU for 80 classes (COCO's count, which
sets the predictor sizes) and measured:
- parameters: sum of ``p.numel()`` over ``model.parameters()`` (shared weights counted once);
- weights size: bytes of the fp32 state_dict tensors (each storage once), i.e. about the checkpoint's size;
- GFLOPs: torch.utils.flop_counter.FlopCounterMode over the detector's raw inference path (what the predictor
  and the exported graph run) on one image of the recipe's input size (min_size x max_size), with the score
  threshold at 0 so the mask head runs on the full ``eval.max_dets`` detections. FlopCounterMode counts
  convolutions and matrix products (2 FLOPs per multiply-add); element-wise ops, normalisation, pooling, RoIAlign
  and NMS are not counted.
Measuring the whole zoo at full input sizes takes minutes on a small CPU, so each measurement is also cached on
disk (``$INSTASEG_CACHE`` or ``~/.cache/instaseg``), keyed by the resolved recipe and the instaseg and torch
versions: a changed recipe or library is measured anew.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import time
from pathlib import Path

import torch

from instaseg.config import list_recipes
from instaseg.models.detector import Detector
from instaseg.models.recipes import load_recipe
from instaseg.utils.cache import cache_root
from instaseg.utils.flops import count_flops as count_model_flops
from instaseg.utils.io import atomic_write_json
from instaseg.utils.progress import progress_bar
from instaseg.version import __version__

MEASURE_CLASSES = 80


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of the state_dict's tensors, each storage counted once (tied weights appear under two names)."""
    seen: dict[int, int] = {}
    for tensor in model.state_dict().values():
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def count_flops(model: Detector, height: int, width: int) -> int:
    """FLOPs (convs and matmuls) of the detector's raw inference path on one random height x width input, padded
    as the pre-processing pads it."""
    spec = model.input_spec
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    batch = spec.canvas(1, *spec.padded_frame(height, width))
    batch[..., :height, :width] = (image - mean) / std
    return count_model_flops(model.raw_forward, batch, [(height, width)])


def _cache_file(recipe: dict) -> Path:
    key = json.dumps([recipe, __version__, torch.__version__, MEASURE_CLASSES], sort_keys=True, default=str)
    return cache_root() / "zoo" / f"{recipe['name']}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


@functools.cache
def measure_recipe(name: str) -> dict:
    """Measured size and cost of a recipe's model, from the disk cache when this exact recipe was measured."""
    recipe = load_recipe(name)
    cache = _cache_file(recipe)
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    measured = _measure(recipe)
    with contextlib.suppress(OSError):  # a read-only home must not stop the listing
        atomic_write_json(cache, measured)
    return measured


def _measure(recipe: dict) -> dict:
    """Build the recipe's model with random init and measure it (see the module notes for what is counted)."""
    from instaseg.models.factory import build_architecture

    start = time.perf_counter()
    measured = copy.deepcopy(recipe)
    measured["eval"]["score_threshold"] = 0.0  # full max_dets detections: the mask head's worst case
    torch.manual_seed(0)
    model = build_architecture(measured, MEASURE_CLASSES).eval()
    h, w = recipe["input"]["min_size"], recipe["input"]["max_size"]
    flops = count_flops(model, h, w)
    return {
        "name": recipe["name"],
        "task": recipe["task"],
        "architecture": recipe["model"]["architecture"],
        "backbone": recipe["model"]["backbone"],
        "input": [h, w],
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflops": round(flops / 1e9, 2),
        "weights_MB": round(weights_bytes(model) / 1e6, 2),
        "default_weights": recipe["model"]["weights"],
        "coco_weights": bool(recipe["model"].get("coco_weights")),
        "measure_seconds": round(time.perf_counter() - start, 2),
    }


def zoo_rows(task: str | None = None) -> list[dict]:
    """Measured rows for every shipped recipe (optionally of one task), with a progress bar on stderr."""
    names = [n for n in list_recipes() if task is None or load_recipe(n)["task"] == task]
    rows = []
    with progress_bar("measuring models", len(names), width=160) as bar:
        for name in names:
            bar.describe(f"measuring {name}")
            rows.append(measure_recipe(name))
            bar.advance()
    return rows


def measure_shipped_or_file(name: str) -> dict:
    """A shipped recipe's numbers (cached), or those of a recipe yaml given by path: measured the same way, not
    cached."""
    return measure_recipe(name) if name in list_recipes() else _measure(load_recipe(name))
