"""Initial weights: ImageNet / COCO through the torch hub cache (no network here), and checkpoint PATHs."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from instaseg.errors import UserError
from instaseg.models.checkpoint import save_checkpoint
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.models.weights.loading import load_weights_file

TINY = ["input.min_size=64", "input.max_size=96"]
CLASS_LAYERS = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; the tests put (fake) downloaded files into it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.fixture
def offline(monkeypatch):
    """Every torch hub download fails as it does on a machine without network."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _fast(*overrides: str) -> dict:
    return apply_overrides(load_recipe("maskrcnn_fast"), [*TINY, *overrides])


def test_path_with_another_class_count_reinitialises_the_class_layers(tmp_path):
    recipe = _fast()
    torch.manual_seed(0)
    source = build_model(recipe, num_classes=3, weights="none")
    save_checkpoint(tmp_path / "three.pt", source, recipe, ["a", "b", "c"], [1, 2, 3])
    torch.manual_seed(1)
    fresh = build_model(recipe, num_classes=5, weights="none").state_dict()
    report = load_weights_file(build_model(recipe, num_classes=5, weights="none"), tmp_path / "three.pt")
    assert set(report["reinitialised"]) == CLASS_LAYERS
    assert report["unexpected"] == [] and report["loaded"] == len(source.state_dict()) - len(CLASS_LAYERS)

    torch.manual_seed(1)
    model = build_model(recipe, num_classes=5, weights=str(tmp_path / "three.pt")).state_dict()
    for key, value in source.state_dict().items():
        if key in CLASS_LAYERS:
            assert model[key].shape != value.shape and torch.equal(model[key], fresh[key])
        else:
            assert torch.equal(model[key], value), key


def test_path_accepts_plain_and_lightning_state_dicts(tmp_path):
    recipe = _fast()
    source = build_model(recipe, num_classes=2, weights="none")
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "l.ckpt")
    for name in ("plain.pth", "l.ckpt"):
        model = build_model(recipe, num_classes=2, weights=str(tmp_path / name))
        key = "backbone.fpn.layer_blocks.0.0.weight"
        assert torch.equal(model.state_dict()[key], source.state_dict()[key])


def test_path_errors(tmp_path):
    recipe = _fast()
    with pytest.raises(UserError, match="weights file not found"):
        build_model(recipe, 2, weights=str(tmp_path / "nope.pt"))
    torch.save({"some.other.layer": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="no tensor in these weights matches"):
        build_model(recipe, 2, weights=str(tmp_path / "other.pt"))
    torch.save({"epoch": 3}, tmp_path / "notweights.pt")
    with pytest.raises(UserError, match="not a checkpoint or state_dict"):
        build_model(recipe, 2, weights=str(tmp_path / "notweights.pt"))


def test_imagenet_loads_from_the_torch_hub_cache(torch_home, offline):
    import torchvision

    fake = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(fake, torch_home / "resnet18-f37072fd.pth")  # the file torchvision's IMAGENET1K_V1 downloads
    recipe = _fast("model.backbone=resnet18", "model.norm=frozen_bn")
    model = build_model(recipe, num_classes=2, weights="imagenet")
    body = model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, fake["layer3.0.conv1.weight"])
    assert torch.equal(body.bn1.running_var, fake["bn1.running_var"])
    # pretrained backbones freeze the stem and the first stage (model.frozen_stages = 1)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad


def test_imagenet_offline_says_which_file_to_put_where(torch_home, offline):
    recipe = _fast("model.backbone=resnet18")
    with pytest.raises(UserError) as info:
        build_model(recipe, num_classes=2, weights="imagenet")
    message = str(info.value)
    assert str(torch_home / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "--weights none" in message


def test_timm_offline_names_the_hugging_face_repo(monkeypatch):
    import timm.models._builder as builder
    from huggingface_hub.errors import LocalEntryNotFoundError

    def refuse(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot reach the Hub and the file is not in the local cache")

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    # a timm backbone no publisher's ImageNet file is listed for (maskrcnn_r50vd_fpn starts from PaddleDetection's)
    recipe = apply_overrides(load_recipe("maskrcnn_resnest50_fpn"), TINY)
    with pytest.raises(UserError) as info:
        build_model(recipe, num_classes=2, weights="imagenet")
    assert "timm/resnest50d.in1k" in str(info.value) and "huggingface" in str(info.value)


def test_coco_loads_torchvision_checkpoints_and_adapts_classes(torch_home, offline):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    # without weights torchvision builds trainable BN; the published file holds FrozenBatchNorm2d tensors only
    coco = {k: v for k, v in coco.items() if not k.endswith("num_batches_tracked")}
    torch.save(coco, torch_home / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    recipe = apply_overrides(load_recipe("maskrcnn_r50_fpn"), TINY)
    state = build_model(recipe, num_classes=4, weights="coco").state_dict()  # the checkpoint the recipe equals
    assert set(state) == set(coco)  # same module names as torchvision's model
    for key, value in coco.items():
        if key in CLASS_LAYERS:
            assert state[key].shape[0] in (5, 5 * 4)
        else:
            assert torch.equal(state[key], value), key


def test_coco_errors(torch_home, offline):
    with pytest.raises(UserError, match="maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"):
        build_model(apply_overrides(load_recipe("maskrcnn_r50_fpn"), TINY), 2, weights="coco")
    with pytest.raises(UserError, match="no COCO-pretrained weights"):
        build_model(_fast(), 2, weights="coco")
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_model(_fast(), 2, weights="imagenet")
