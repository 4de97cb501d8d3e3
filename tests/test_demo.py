"""The demo end to end, shrunk: generated shapes, a short training run, the best checkpoint evaluated again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from instaseg.engine import demo
from instaseg.errors import UserError
from test_train import TINY


def test_demo_trains_and_scores_the_best_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_IMAGES", 6)
    monkeypatch.setattr(demo, "DEMO_IMG_SIZE", 64)
    # 4 train images in batches of 2: the 4-step budget ends the run after 2 of its 3 epochs, on a validated one
    shrink = ["train.epochs=3", "train.max_steps=4", "train.val_interval=2"]
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", [*demo.DEMO_OVERRIDES, *TINY, *shrink])
    out = tmp_path / "demo"
    result = demo.run_demo(out, minutes=2.0, seed=3)

    assert set(result) >= {"mask_AP", "box_AP", "train_seconds", "total_seconds", "out"}
    assert result["out"] == str(out) and 0 < result["train_seconds"] < result["total_seconds"]
    assert json.loads((out / "demo_result.json").read_text()) == result
    val = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in val["categories"]] == ["circle", "triangle", "square"]  # the demo's easy style
    assert yaml.safe_load((out / "train" / "config.yaml").read_text())["train"]["lr_schedule"] == "flat_cosine"
    assert (out / "evaluate_result.json").is_file() and result["report"] == str(out / "analysis" / "report.html")
    assert (out / "analysis" / "report.html").is_file() and not (out / "train" / "analysis").exists()
    # the checkpoint evaluated afresh scores what validation of the EMA weights scored during training
    trained = json.loads((out / "train" / "train_result.json").read_text())
    assert trained["done_flag"] and trained["stop_reason"] == "max_steps" and trained["epochs_completed"] == 2
    assert result["checkpoint"] == str(out / "train" / "best.ckpt") and trained["best_epoch"] == 1
    assert result["mask_AP"] == pytest.approx(trained["best_metrics"]["mask_AP"], abs=1e-6)
    assert result["box_AP"] == pytest.approx(trained["best_metrics"]["box_AP"], abs=1e-6)

    with pytest.raises(UserError, match="already holds a demo run"):
        demo.run_demo(out)


def test_the_demo_is_bounded_by_optimizer_steps(tmp_path: Path) -> None:
    """The full demo's recipe reaches Lightning as a step budget that ends on a validated epoch."""
    from instaseg.engine.train import build_trainer
    from instaseg.models.recipes import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe(demo.DEMO_RECIPE), demo.DEMO_OVERRIDES)
    assert recipe["train"]["max_steps"] == demo.DEMO_STEPS and recipe["train"]["lr_schedule"] == "flat_cosine"
    trainer = build_trainer(recipe, tmp_path, "cpu", 1, 1)
    assert trainer.max_steps == demo.DEMO_STEPS
    steps_per_epoch = int(demo.DEMO_IMAGES * 0.8) // recipe["train"]["batch_size"]  # 80 batches of 4
    epochs = demo.DEMO_STEPS // steps_per_epoch
    assert epochs * steps_per_epoch == demo.DEMO_STEPS and trainer.max_epochs == epochs
    assert epochs % trainer.check_val_every_n_epoch == 0  # the last epoch is validated: best.ckpt is the end
    # a wall-clock cap stays, as a safety net well above what the steps take (~0.25 s each on 2 cores)
    assert recipe["train"]["max_minutes"] * 60 > 1.5 * 0.25 * demo.DEMO_STEPS
