"""Every recipe builds and trains a step; the fast model's output format; the zoo command's measured numbers."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from instaseg.config import list_recipes
from instaseg.models.factory import build_architecture, build_model
from instaseg.models.recipes import apply_overrides, load_recipe

LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
# tiny inputs and fewer RoIs keep a train step of the biggest backbones to a few seconds on a CPU
TINY = [
    "input.min_size=64",
    "input.max_size=96",
    "model.rpn_post_nms_top_n_train=64",
    "model.box_batch_size_per_image=32",
]


def _sample(h: int, w: int, boxes: list[list[int]], labels: list[int]) -> tuple[torch.Tensor, dict]:
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        m[y0:y1, x0:x1] = 1
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels), "masks": masks}
    return torch.rand(3, h, w), target


@pytest.mark.parametrize("name", [n for n in list_recipes() if n.startswith("maskrcnn")])  # rtmdet: test_rtmdet.py
def test_every_recipe_builds_and_trains_a_step(name):
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe(name), TINY)
    model = build_model(recipe, num_classes=3, weights="none").train()
    image, target = _sample(64, 96, [[8, 8, 50, 40], [40, 20, 90, 60]], [1, 3])
    losses = model([image], [target])
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])  # the heads received gradients
    assert any(g is not None and g.abs().sum() > 0 for g in grads[:10])  # and so did the backbone's first layers
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background


def test_fast_model_eval_output_format():
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["input.min_size=96", "input.max_size=128"])
    model = build_model(recipe, num_classes=2, weights="none").eval()
    images = [torch.rand(3, 70, 110), torch.rand(3, 120, 90)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for pred, image in zip(out, images, strict=True):
        assert set(pred) == {"boxes", "labels", "scores", "masks"}
        n = len(pred["scores"])
        assert 0 < n <= recipe["eval"]["max_dets"]
        assert pred["boxes"].shape == (n, 4)
        assert pred["masks"].shape == (n, 1, *image.shape[1:])  # pasted back at the input image's size
        assert pred["masks"].dtype == torch.float32
        assert pred["masks"].min() >= 0 and pred["masks"].max() <= 1
        assert set(pred["labels"].tolist()) <= {1, 2}
        assert (pred["scores"] >= recipe["eval"]["score_threshold"]).all() and (pred["scores"] <= 1).all()
        assert (pred["boxes"][:, 2] <= image.shape[2]).all() and (pred["boxes"][:, 3] <= image.shape[1]).all()


def test_swin_accepts_sizes_off_its_224_grid():
    recipe = apply_overrides(load_recipe("maskrcnn_swin_tiny_fpn"), ["input.min_size=100", "input.max_size=150"])
    recipe["eval"]["max_dets"] = 5
    model = build_architecture(recipe, 2).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 137)])
    assert out[0]["masks"].shape[-2:] == (100, 137)


def test_c4_box_and_mask_heads_share_res5():
    model = build_architecture(load_recipe("maskrcnn_r50_c4"), 2)
    assert model.roi_heads.mask_head is model.roi_heads.box_head[0]
    assert len(model.backbone.featmap_names) == 1
    assert model.roi_heads.mask_predictor.mask_fcn_logits.in_channels == 256
    assert model.roi_heads.box_predictor.cls_score.in_features == 2048


def test_v2_matches_torchvision_structure():
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    ours = build_architecture(load_recipe("maskrcnn_r50_fpn_v2"), 90).state_dict()
    theirs = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).state_dict()
    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_num_classes_must_be_positive():
    from instaseg.errors import UserError

    with pytest.raises(UserError, match="num_classes"):
        build_model("maskrcnn_fast", 0, weights="none")


@pytest.fixture
def fast_only_zoo(monkeypatch):
    """`instaseg models` over the fast recipe only: measuring the whole zoo at full size takes minutes."""
    import instaseg.models.zoo as zoo

    monkeypatch.setattr(zoo, "list_recipes", lambda: ["maskrcnn_fast"])


def test_models_json_numbers_are_measured(cli, fast_only_zoo):
    code, out, _ = cli("models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["maskrcnn_fast"]
    row = rows[0]
    model = build_architecture(load_recipe("maskrcnn_fast"), 80)
    n_params = sum(p.numel() for p in model.parameters())
    assert row["params_M"] == pytest.approx(n_params / 1e6, abs=1e-3)
    # fp32 weights plus buffers (BatchNorm statistics): at least 4 bytes per parameter
    assert row["weights_MB"] >= 4 * n_params / 1e6 - 0.01
    assert row["gflops"] > 0 and row["input"] == [256, 256]
    assert row["architecture"] == "maskrcnn" and row["backbone"] == "resnet18_slim"
    code, out, _ = cli("models", "--task", "instance_segmentation")
    assert code == 0 and "maskrcnn_fast" in out and "GFLOPs" in out
    code, out, _ = cli("models", "--task", "panoptic", "--json")
    assert code == 0 and json.loads(out) == []


def test_flops_grow_with_input_size():
    from instaseg.models.zoo import count_flops

    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["eval.max_dets=5"])  # the backbone's share dominates
    recipe["eval"]["score_threshold"] = 0.0
    small = build_architecture(apply_overrides(recipe, ["input.min_size=64", "input.max_size=64"]), 2).eval()
    large = build_architecture(apply_overrides(recipe, ["input.min_size=128", "input.max_size=128"]), 2).eval()
    small.load_state_dict(large.state_dict())
    assert count_flops(large, 128, 128) > 1.5 * count_flops(small, 64, 64) > 0


def test_models_name_prints_full_recipe(cli):
    code, out, _ = cli("models", "maskrcnn_fast")
    assert code == 0
    assert yaml.safe_load(out) == load_recipe("maskrcnn_fast")  # the measured numbers are yaml comments
    assert "params_M" in out and "gflops" in out
    code, out, _ = cli("models", "maskrcnn_fast", "--json")
    assert code == 0 and json.loads(out)["recipe"]["name"] == "maskrcnn_fast"
    code, _, err = cli("models", "no_such_model")
    assert code == 2 and "unknown recipe" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_whole_zoo_measures(cli):
    code, out, _ = cli("models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(list_recipes())
    assert all(r["params_M"] > 0 and r["gflops"] > 0 and r["weights_MB"] > 0 for r in rows.values())
    assert rows["maskrcnn_x101_32x8d_fpn"]["params_M"] > rows["maskrcnn_r50_fpn"]["params_M"]
    assert rows["maskrcnn_r50_fpn"]["gflops"] > rows["maskrcnn_fast"]["gflops"]


def test_zoo_measurement_is_cached_on_disk_per_recipe(tmp_path, monkeypatch):
    from instaseg.models import zoo

    monkeypatch.setenv("INSTASEG_CACHE", str(tmp_path))
    zoo.measure_recipe.cache_clear()
    first = zoo.measure_recipe("maskrcnn_fast")
    files = list((tmp_path / "zoo").glob("maskrcnn_fast-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    # a stored measurement is what the next process reads back
    files[0].write_text(json.dumps({**first, "gflops": -1.0}))
    zoo.measure_recipe.cache_clear()
    assert zoo.measure_recipe("maskrcnn_fast")["gflops"] == -1.0
    # a changed recipe has another key, so it is measured anew
    changed = zoo.load_recipe("maskrcnn_fast")
    changed["model"]["fpn_channels"] = 32
    assert zoo._cache_file(changed) != files[0]
    zoo.measure_recipe.cache_clear()
