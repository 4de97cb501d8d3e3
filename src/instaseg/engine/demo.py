"""`run_demo()`: synthetic shapes -> the fast recipe for 800 optimizer steps -> COCO AP of the best checkpoint.

Runs offline on any CPU: the data are generated (`instaseg.data.synthetic`) and the model starts from random
weights, both from ``seed``. Training stops after ``DEMO_STEPS`` optimizer steps (``train.max_steps``), so what
the demo reaches does not depend on the machine's speed; only the time does (about 0.25 s a step on two free CPU
cores, 3-4 minutes in all). ``train.max_minutes`` (``minutes``, default 8) is only a safety net: should it stop
a very slow run, the learning rate has followed the time instead and the model is less trained.

The demo's data are the easy style of the shapes set: three classes (circle, triangle, square), at most four
per image, on a plain dark background. 800 steps learn these shapes well (mask AP 0.61-0.63 over seeds 0-2),
not the textured five-class default. The learning rate follows step progress (flat, then cosine to 5% over the
second half) instead of waiting for a plateau that a short run never reaches, and validation (80 images) runs
only after epochs 5 and 10, so it takes little from training. PyTorch's two threads need the cores to
themselves: with another busy process on a 2-core machine a step can take several times as long.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from instaseg.data.coco import split_file
from instaseg.data.synthetic import SynthStyle, generate_synthetic
from instaseg.engine.evaluate import evaluate
from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_json

logger = logging.getLogger("instaseg.demo")

DEMO_RECIPE = "maskrcnn_fast"
DEMO_IMAGES = 400  # 320 train / 80 val
DEMO_IMG_SIZE = 256
DEMO_STYLE = SynthStyle(num_classes=3, background="plain", max_instances=4)
DEMO_EPOCHS = 10
DEMO_STEPS = DEMO_EPOCHS * 80  # optimizer steps: 80 batches of 4 (320 train images) per epoch
DEMO_VAL_INTERVAL = 5  # validate (80 images) after epochs 5 and 10: the last epoch is validated, so best.ckpt exists
DEMO_MAX_MINUTES = 8.0  # a safety net for slow machines; a normal run ends on DEMO_STEPS well before it
# on top of maskrcnn_fast (tests shrink the run by adding to these)
DEMO_OVERRIDES: list[str] = [
    "train.lr_schedule=flat_cosine",
    f"train.max_steps={DEMO_STEPS}",
    f"train.epochs={DEMO_EPOCHS}",
    f"train.val_interval={DEMO_VAL_INTERVAL}",
    f"train.max_minutes={DEMO_MAX_MINUTES}",
    "eval.analyze=false",  # the demo analyses the checkpoint it scores itself (best.ckpt, or last.ckpt if cut)
]


def run_demo(out: str | Path, minutes: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Generate the shapes data in OUT/data, train `maskrcnn_fast` into OUT/train, evaluate and analyse its
    best.ckpt (OUT/analysis/report.html).

    Returns (and writes to OUT/demo_result.json) ``{mask_AP, box_AP, train_seconds, out, report, ...}``.
    """
    from instaseg.engine.train import train

    began = time.monotonic()
    out = Path(out)
    if (out / "train").exists():
        raise UserError("already holds a demo run (train/); choose another --out", out)
    data = out / "data"
    if not split_file(data, "train").is_file():
        generate_synthetic(data, num_images=DEMO_IMAGES, img_size=DEMO_IMG_SIZE, seed=seed, style=DEMO_STYLE)
    overrides = [*DEMO_OVERRIDES, f"train.seed={int(seed)}"]  # the seed picks the data and the initial weights
    overrides += [f"train.max_minutes={float(minutes)}"] if minutes is not None else []
    start = time.monotonic()
    result = train(DEMO_RECIPE, data, out=out / "train", overrides=overrides)
    train_seconds = time.monotonic() - start
    if not result.get("is_global_zero", True):
        return result
    checkpoint = result["paths"]["best"]
    if not Path(checkpoint).is_file():  # the time cap stopped a very slow run before its first validation
        cap = DEMO_MAX_MINUTES if minutes is None else minutes
        logger.warning("no validated checkpoint (the %s min cap stopped training early): scoring last.ckpt", cap)
        checkpoint = result["paths"]["last"]
    # the best checkpoint scored afresh, through the same path as `instaseg eval --analyze`
    # (OUT/evaluate_result.json, OUT/analysis/report.html)
    scored = evaluate(checkpoint, data, split="val", out=out, analyze=True)
    metrics = scored["metrics"]
    demo = {
        "mask_AP": metrics["mask_AP"],
        "box_AP": metrics["box_AP"],
        "mask_AP50": metrics["mask_AP50"],
        "box_AP50": metrics["box_AP50"],
        "train_seconds": train_seconds,
        "total_seconds": time.monotonic() - began,  # data generation + training + final evaluation
        "epochs": result.get("epochs_completed"),
        "best_epoch": result.get("best_epoch"),
        "recipe": DEMO_RECIPE,
        "seed": seed,
        "out": str(out),
        "checkpoint": checkpoint,
        "report": scored["analysis"]["report"],
    }
    atomic_write_json(out / "demo_result.json", demo)
    return demo
