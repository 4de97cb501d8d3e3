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
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", [*demo.DEMO_OVERRIDES, *TINY, "train.epochs=1"])
    out = tmp_path / "demo"
    result = demo.run_demo(out, minutes=2.0, seed=3)

    assert set(result) >= {"mask_AP", "box_AP", "train_seconds", "out"}
    assert result["out"] == str(out) and result["train_seconds"] > 0
    assert json.loads((out / "demo_result.json").read_text()) == result
    val = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in val["categories"]] == ["circle", "triangle", "square"]  # the demo's easy style
    assert yaml.safe_load((out / "train" / "config.yaml").read_text())["train"]["lr_schedule"] == "flat_cosine"
    assert (out / "evaluate_result.json").is_file()
    # the checkpoint evaluated afresh scores what validation of the EMA weights scored during training
    trained = json.loads((out / "train" / "train_result.json").read_text())
    assert trained["done_flag"] and trained["stop_reason"] == "max_epochs"
    assert result["mask_AP"] == pytest.approx(trained["best_metrics"]["mask_AP"], abs=1e-6)
    assert result["box_AP"] == pytest.approx(trained["best_metrics"]["box_AP"], abs=1e-6)

    with pytest.raises(UserError, match="already holds a demo run"):
        demo.run_demo(out)
