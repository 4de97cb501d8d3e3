"""Recipes: shipped names, loading by path, dotted overrides and validation errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from instaseg.config import DEFAULTS, list_recipes, parse_override
from instaseg.errors import UserError
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.registry import ARCHITECTURES

EXPECTED = {
    "maskrcnn_fast",
    "maskrcnn_r50_fpn",
    "maskrcnn_r50_fpn_v2",
    "maskrcnn_r50_fpn_paddlex",
    "maskrcnn_r101_fpn",
    "maskrcnn_x101_32x8d_fpn",
    "maskrcnn_r50vd_fpn",
    "maskrcnn_r101vd_fpn",
    "maskrcnn_x101vd_fpn",
    "maskrcnn_resnest50_fpn",
    "maskrcnn_convnext_tiny_fpn",
    "maskrcnn_swin_tiny_fpn",
    "maskrcnn_effnet_b2_fpn",
    "maskrcnn_mnv3_large_fpn",
    "maskrcnn_r50_c4",
}


def test_shipped_recipes_are_complete_and_valid():
    assert set(list_recipes()) >= EXPECTED
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe["name"] == name
        assert recipe["task"] == "instance_segmentation"
        assert set(DEFAULTS["train"]) <= set(recipe["train"])
        assert recipe["model"]["architecture"] in ARCHITECTURES
        assert recipe["input"]["min_size"] <= recipe["input"]["max_size"]


def test_big_recipes_default_to_800x1333_and_pretrained():
    for name in EXPECTED - {"maskrcnn_fast", "maskrcnn_mnv3_large_fpn"}:
        recipe = load_recipe(name)
        assert recipe["input"] == {"min_size": 800, "max_size": 1333, "resize": "keep_ratio"}, name
        assert recipe["model"]["weights"] == "imagenet", name
    fast = load_recipe("maskrcnn_fast")
    assert fast["model"]["weights"] == "none" and fast["model"]["norm"] == "bn"
    assert fast["input"]["max_size"] <= 320


def test_load_by_path_fills_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {architecture: maskrcnn, backbone: resnet18, weights: none}\ntrain: {epochs: 3}\n")
    recipe = load_recipe(path)
    assert recipe["name"] == "mine"
    assert recipe["train"]["epochs"] == 3
    # the architecture's published recipe fills what the file leaves out, then the generic defaults
    from instaseg.models.common.rcnn_recipe import RCNN_1X

    assert recipe["train"]["batch_size"] == RCNN_1X["batch_size"] and recipe["train"]["lr_schedule"] == "multistep"
    assert recipe["train"]["val_interval"] == DEFAULTS["train"]["val_interval"]
    assert recipe["model"]["backbone"] == "resnet18" and recipe["model"]["fpn_channels"] == 256
    assert load_recipe(recipe) == recipe  # a complete recipe loads to itself


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model: {architecture: maskrcnn}\ntrian: {epochs: 3}\n", "'trian'"),
        ("model: {architecture: maskrcnn}\ntrain: {epoch: 3}\n", "'train.epoch'"),
        ("model: {architecture: maskrcnn, backbon: resnet18}\n", "'model.backbon'"),
        ("model: {architecture: maskrcnn, backbone: vgg99}\n", "unknown backbone 'vgg99'"),
        ("model: {architecture: yolo}\n", "unknown architecture 'yolo'"),
        ("model: {architecture: maskrcnn}\ntrain: {epochs: many}\n", "train.epochs must be int"),
        ("model: {architecture: maskrcnn}\ninput: {min_size: 900, max_size: 800}\n", "min_size must not exceed"),
        ("model: {architecture: maskrcnn, levels: [3, 4]}\n", "anchor_sizes"),
        ("model: {architecture: maskrcnn, levels: [4, 3]}\n", "model.levels"),
        ("model: {architecture: maskrcnn, norm: gn}\n", "model.norm"),
        ("train: {epochs: 3}\n", "architecture"),
        ("model: [1, 2\n", "malformed yaml"),
        ("- just a list\n", "yaml mapping"),
    ],
)
def test_bad_recipe_files_raise_user_errors(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert needle in str(info.value)


def test_unknown_name_and_missing_file():
    with pytest.raises(UserError, match="unknown recipe 'nope'.*maskrcnn_fast"):
        load_recipe("nope")
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_parse_override_reads_yaml_values():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("train.ema=false") == (["train", "ema"], False)
    assert parse_override("train.scale_jitter=[0.5, 2]") == (["train", "scale_jitter"], [0.5, 2])
    assert parse_override("train.max_minutes=null") == (["train", "max_minutes"], None)
    assert parse_override("model.backbone=resnet18") == (["model", "backbone"], "resnet18")


def test_apply_overrides_copies_and_validates():
    base = load_recipe("maskrcnn_fast")
    out = apply_overrides(base, ["train.epochs=7", "train.ema=true", "model.fpn_channels=32", "train.lr=0.01"])
    assert out["train"]["epochs"] == 7 and out["train"]["ema"] is True
    assert out["model"]["fpn_channels"] == 32 and out["train"]["lr"] == 0.01
    assert base["train"]["epochs"] != 7 and base["model"]["fpn_channels"] == 64  # the input is not modified
    assert apply_overrides(base, []) == base
    sized = apply_overrides(base, ["input.min_size=128", "input.max_size=128"])
    assert sized["input"] == {"min_size": 128, "max_size": 128, "resize": "keep_ratio"}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epoch=3", "unknown recipe key 'train.epoch'"),
        ("trian.epochs=3", "unknown recipe key 'trian'"),
        ("train.epochs.x=3", "unknown recipe key 'train.epochs.x'"),
        ("train.epochs=three", "train.epochs must be int"),
        ("train.ema=maybe", "train.ema must be bool"),
        ("train.lr=-1", "train.lr must be positive"),
        ("model.backbone=vgg99", "unknown backbone"),
        ("train.epochs", "not KEY=VALUE"),
    ],
)
def test_bad_overrides_raise_user_errors(override, needle):
    with pytest.raises(UserError) as info:
        apply_overrides(load_recipe("maskrcnn_fast"), [override])
    assert needle in str(info.value)


def test_recipe_files_are_plain_yaml_mappings():
    from instaseg.config import RECIPE_DIR

    for path in RECIPE_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and "model" in data and "description" in data, path


def test_schedules_take_the_recipe_values_only() -> None:
    """The engine's lr callback follows the recipe; a train section missing a key fails instead of falling back."""
    from instaseg.engine.schedules import make_lr_callback

    plateau = make_lr_callback(DEFAULTS["train"])  # warmup over the same images at 2 per step as at base_batch
    cfg = DEFAULTS["train"]
    assert plateau.warmup_iters == cfg["warmup_iters"] * cfg["base_batch"] / cfg["batch_size"]
    assert plateau.patience == DEFAULTS["train"]["plateau_patience"]
    cosine = make_lr_callback(load_recipe("rtmdet_ins_tiny_fast")["train"])
    assert cosine.warmup_iters == 100 and cosine.min_ratio == 0.05
    with pytest.raises(KeyError):
        make_lr_callback({"lr_schedule": "plateau"})


def test_an_architecture_supplies_its_recipe_defaults() -> None:
    """rtmdet_ins recipes state only what differs from the architecture's published recipe."""
    from instaseg.config import RECIPE_DIR, read_recipe_file

    written = read_recipe_file(RECIPE_DIR / "rtmdet_ins_s.yaml")
    assert set(written) == {"name", "description", "model", "published"}  # the file: no input or train block
    recipe = load_recipe("rtmdet_ins_s")
    assert recipe["train"]["optimizer"] == "adamw" and recipe["train"]["epochs"] == 300
    assert recipe["input"] == {"min_size": 640, "max_size": 640, "resize": "keep_ratio"}
    assert recipe["train"]["mosaic"] is True
    assert load_recipe("maskrcnn_r50_fpn")["train"]["optimizer"] == "sgd"  # not another architecture's
    fast = load_recipe("rtmdet_ins_tiny_fast")
    assert fast["train"]["mosaic"] is False and fast["train"]["optimizer"] == "adamw"


@pytest.mark.parametrize("name", ["maskrcnn_fast", "mask_rtdetr_fast"])
def test_recipes_stored_before_a_default_resize_existed_still_load(name):
    """A checkpoint's complete recipe from before train.multiscale / batch_multiscale had architecture defaults
    holds neither key: what it writes (its scale_jitter, its resize rule) wins over the new default."""
    stored = load_recipe(name)
    del stored["train"]["multiscale"], stored["train"]["batch_multiscale"]
    stored["train"]["scale_jitter"] = [0.8, 1.25]
    stored["input"]["resize"] = "keep_ratio"
    loaded = load_recipe(stored)
    assert loaded["train"]["multiscale"] is None and loaded["train"]["batch_multiscale"] is None
    assert loaded["train"]["scale_jitter"] == [0.8, 1.25]
    written = {**stored, "train": {**stored["train"], "multiscale": [480, 512]}}
    with pytest.raises(UserError, match="both resize"):  # both written: still the user's clash to settle
        load_recipe(written)
