"""Checkpoints: atomic save, weights_only load of instaseg and Lightning files, rebuild with identical outputs."""

from __future__ import annotations

import pytest
import torch

from instaseg.errors import UserError
from instaseg.models.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from instaseg.models.factory import build_model, model_from_checkpoint
from instaseg.models.recipes import apply_overrides, load_recipe

CLASSES = ["cat", "dog"]
IDS = [17, 18]


@pytest.fixture(scope="module")
def fast_model():
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["input.min_size=96", "input.max_size=128"])
    model = build_model(recipe, num_classes=len(CLASSES), weights="none").eval()
    return model, recipe


def _predict(model, images):
    with torch.no_grad():
        return model(images)


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_round_trip_gives_the_same_outputs(fast_model, tmp_path):
    model, recipe = fast_model
    path = save_checkpoint(tmp_path / "sub" / "best.pt", model, recipe, CLASSES, IDS)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary left behind
    info = load_checkpoint(path)
    assert info["class_names"] == CLASSES and info["category_ids"] == IDS
    assert info["input"] == {"min_size": 96, "max_size": 128, "resize": "keep_ratio"}
    assert info["recipe"] == recipe and isinstance(info["version"], str)
    rebuilt, meta = model_from_checkpoint(path)
    assert not rebuilt.training and "model_state_dict" not in meta and meta["path"] == str(path)
    images = [torch.rand(3, 90, 120), torch.rand(3, 128, 64)]
    assert _same(_predict(model, images), _predict(rebuilt, images))


def test_lightning_ckpt_and_in_memory_dicts_load(fast_model, tmp_path):
    model, recipe = fast_model
    payload = checkpoint_payload(model, recipe, CLASSES, IDS)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    lightning = {"epoch": 3, "state_dict": state, "instaseg": payload}
    torch.save(lightning, tmp_path / "last.ckpt")
    assert load_checkpoint(tmp_path / "last.ckpt")["class_names"] == CLASSES
    images = [torch.rand(3, 100, 100)]
    expected = _predict(model, images)
    for source in (tmp_path / "last.ckpt", lightning, payload):
        rebuilt, info = model_from_checkpoint(source)
        assert info["category_ids"] == IDS
        assert _same(expected, _predict(rebuilt, images))


def test_ema_state_dict_is_saved_instead_of_the_module(fast_model, tmp_path):
    model, recipe = fast_model
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "ema.pt", ema, recipe, CLASSES, IDS)
    saved = load_checkpoint(tmp_path / "ema.pt")["model_state_dict"]
    key = "roi_heads.box_predictor.cls_score.bias"
    assert torch.equal(saved[key], model.state_dict()[key] + 1)


def test_bad_files_raise_user_errors(fast_model, tmp_path):
    model, _ = fast_model
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pt"
    torch.save({"instaseg": {"x": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(UserError):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(UserError, match="not an instaseg checkpoint"):
        load_checkpoint(plain)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"instaseg": {"recipe": {}, "class_names": []}}, incomplete)
    with pytest.raises(UserError, match="missing category_ids, model_state_dict"):
        load_checkpoint(incomplete)


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    path = tmp_path / "pickled.pt"
    torch.save({"instaseg": argparse.Namespace(a=1)}, path)  # an arbitrary class: weights_only must refuse it
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_recipe(fast_model, tmp_path):
    model, recipe = fast_model
    other = apply_overrides(recipe, ["model.fpn_channels=32"])
    save_checkpoint(tmp_path / "mismatch.pt", model, other, CLASSES, IDS)
    with pytest.raises(UserError, match="do not fit"):
        model_from_checkpoint(tmp_path / "mismatch.pt")


def test_class_names_and_ids_must_pair_up(fast_model, tmp_path):
    model, recipe = fast_model
    with pytest.raises(ValueError, match="category ids"):
        save_checkpoint(tmp_path / "x.pt", model, recipe, CLASSES, [1])
