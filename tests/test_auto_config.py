"""Dataset-aware configuration: what `instaseg train` chooses from the training split, and what keeps its value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from instaseg.data.coco import load_coco
from instaseg.data.statistics import DatasetStatistics, anchor_coverage, anchor_shapes
from instaseg.data.synthetic import generate_synthetic, small_objects_style
from instaseg.engine.auto_config import auto_configure, box_wh_at_input, render_choices
from instaseg.models.recipes import load_recipe


def _coverage(recipe: dict, stats: DatasetStatistics) -> float:
    shapes = anchor_shapes(recipe["model"]["anchor_sizes"], recipe["model"]["aspect_ratios"])
    return anchor_coverage(box_wh_at_input(stats, recipe), shapes)


def _choice(recipe: dict, key: str) -> dict:
    return next(c for c in recipe["auto"]["choices"] if c["key"] == key)


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "data"
    return generate_synthetic(out, num_images=3, seed=1, style=small_objects_style(num_classes=2, max_instances=150))


@pytest.mark.parametrize("name", ["maskrcnn_fast", "cascade_maskrcnn_fast", "maskrcnn_r50_fpn"])
def test_anchor_coverage_reaches_95_percent_on_tiny_coco(tiny_coco: Path, name: str) -> None:
    stats = DatasetStatistics.of(load_coco(tiny_coco / "annotations" / "instances_train.json"))
    recipe = load_recipe(name)
    before = _coverage(recipe, stats)
    fitted = auto_configure(recipe, stats)
    assert _coverage(fitted, stats) >= 0.95 > before
    assert fitted["eval"]["max_dets"] >= int(stats.per_image.max())
    assert "anchor coverage" in _choice(fitted, "model.anchor_sizes")["why"]


def test_small_objects_get_tiles_fitted_anchors_and_enough_detections(small_objects: Path) -> None:
    stats = DatasetStatistics.of(load_coco(small_objects / "annotations" / "instances_train.json"))
    recipe = load_recipe("maskrcnn_fast")
    fitted = auto_configure(recipe, stats)
    tile = fitted["tiling"]["size"]
    assert tile is not None and 128 <= tile <= 512  # the fast recipe's 256 px input, halved to doubled
    assert fitted["input"]["min_size"] == 256  # tiles are resized to the recipe's input
    assert _coverage(fitted, stats) >= 0.95
    busiest = int(stats.per_image.max())
    assert busiest > 100 and fitted["eval"]["max_dets"] >= busiest
    assert fitted["model"]["rpn_post_nms_top_n_test"] >= fitted["eval"]["max_dets"]
    assert 0.1 <= fitted["tiling"]["overlap"] <= 0.5


def test_a_larger_input_before_tiles_when_that_suffices() -> None:
    stats = DatasetStatistics(
        box_wh=np.full((20, 2), 24.0),
        box_image=np.zeros(20, dtype=np.int64),
        box_class=np.ones(20, dtype=np.int64),
        image_hw=np.array([[640.0, 640.0]]),
        per_image=np.array([20]),
        class_names={1: "thing"},
    )
    fitted = auto_configure(load_recipe("maskrcnn_fast"), stats)  # 24 px objects become 9.6 px at 256 px
    assert fitted["tiling"]["size"] is None
    assert fitted["input"]["min_size"] == fitted["input"]["max_size"] == 448  # x1.67, a multiple of 32


def test_command_line_keys_keep_their_values(tiny_coco: Path) -> None:
    stats = DatasetStatistics.of(load_coco(tiny_coco / "annotations" / "instances_train.json"))
    recipe = load_recipe("maskrcnn_fast")
    explicit = {"model.anchor_sizes", "eval.max_dets"}
    fitted = auto_configure(recipe, stats, explicit)
    assert fitted["model"]["anchor_sizes"] == recipe["model"]["anchor_sizes"]
    assert fitted["model"]["aspect_ratios"] == recipe["model"]["aspect_ratios"]
    assert _choice(fitted, "eval.max_dets")["why"] == "set on the command line"


def test_detection_weights_keep_the_anchor_count(tiny_coco: Path) -> None:
    stats = DatasetStatistics.of(load_coco(tiny_coco / "annotations" / "instances_train.json"))
    fitted = auto_configure(load_recipe("maskrcnn_r50_fpn"), stats, weights="coco")
    assert [len(level) for level in fitted["model"]["anchor_sizes"]] == [1] * 5
    assert len(fitted["model"]["aspect_ratios"]) == 3


@pytest.mark.parametrize(
    ("name", "candidates", "factor"), [("solov2_fast", "nms_pre", 2), ("mask_rtdetr_fast", "num_queries", 1)]
)
def test_architectures_without_anchors_get_the_rest(small_objects: Path, name: str, candidates: str, factor: int):
    """Their candidate counts follow the detections per image: NMS inputs, or DETR queries (one per object)."""
    stats = DatasetStatistics.of(load_coco(small_objects / "annotations" / "instances_train.json"))
    recipe = load_recipe(name)
    fitted = auto_configure(recipe, stats)
    keys = {c["key"] for c in fitted["auto"]["choices"]}
    assert {"input.min_size", "tiling.size", "eval.max_dets", f"model.{candidates}"} <= keys
    assert not any("anchor" in k for k in keys)
    assert fitted["eval"]["max_dets"] >= int(stats.per_image.max()) > recipe["eval"]["max_dets"]
    assert fitted["model"][candidates] >= max(factor * fitted["eval"]["max_dets"], recipe["model"][candidates])
    if name == "mask_rtdetr_fast":  # 100 queries could not hold the busiest image's objects: raised
        assert fitted["model"][candidates] > recipe["model"][candidates]
    assert "eval.max_dets" in render_choices(fitted)


def test_train_records_the_choices_and_auto_off_keeps_the_recipe(small_objects: Path, tmp_path: Path, cli) -> None:
    from instaseg.engine.train import _configure_for_data

    data = load_coco(small_objects / "annotations" / "instances_train.json")
    recipe = load_recipe("maskrcnn_fast")
    on = _configure_for_data(recipe, data, None, set(), None, tmp_path)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["auto"]["enabled"] and written["model"]["anchor_sizes"] == on["model"]["anchor_sizes"]
    assert written["tiling"]["size"] == on["tiling"]["size"] is not None
    off = _configure_for_data(recipe, data, False, set(), None, tmp_path)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert not written["auto"]["enabled"] and written["model"] == recipe["model"] == off["model"]
    assert written["tiling"]["size"] is None


def test_data_check_shows_statistics_and_the_choices(small_objects: Path, tmp_path: Path, cli) -> None:
    code, out, _ = cli("data", "check", small_objects, "--out", tmp_path / "report", "--samples", "0")
    assert code == 0
    assert "object and image sizes" in out and "tiling.size" in out and "model.anchor_sizes" in out
    report = yaml.safe_load((tmp_path / "report" / "check_result.json").read_text())
    assert report["attributes"]["train_statistics"]["instances"] > 100
