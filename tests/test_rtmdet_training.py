"""RTMDet's training recipe on the shared engine: Mosaic + MixUp with their switch-off, AdamW, flat-cosine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from instaseg.data.mosaic import MixUp, Mosaic, StagedPipeline, build_mosaic_pipeline
from instaseg.data.pipeline import build_transforms
from instaseg.data.synthetic import generate_synthetic
from instaseg.data.transforms import boxes_from_masks, wrap_sample
from instaseg.engine.lr_schedules import WarmupFlatCosineLR
from instaseg.engine.schedules import build_optimizer
from instaseg.errors import UserError
from instaseg.models.recipes import apply_overrides, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = [
    "model.weights=none",  # the recipe's published start is the CSPNeXt ImageNet backbone: a download
    "input.min_size=64",
    "input.max_size=64",
    "model.neck_channels=32",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.warmup_iters=2",
    "train.epochs=2",
    "train.mosaic_until=0.5",
]


def _sample(h: int, w: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    for m in masks:
        y, x = (int(v) for v in torch.randint(0, min(h, w) // 2, (2,), generator=g))
        m[y : y + h // 3, x : x + w // 3] = 1
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g)
    target = {"boxes": boxes_from_masks(masks), "labels": torch.arange(1, n + 1), "masks": masks}
    return wrap_sample(image, target)


def test_mosaic_places_four_images_on_a_double_canvas():
    mosaic = Mosaic(size=64)
    for seed in range(3):
        image, target = mosaic(*_sample(48, 80, 2, seed))
    assert image.shape == (3, 128, 128)
    assert len(target["labels"]) == 8 and target["masks"].shape == (8, 128, 128)
    boxes, masks = target["boxes"].as_subclass(torch.Tensor), target["masks"].as_subclass(torch.Tensor)
    visible = masks.flatten(1).any(1)
    # an instance's box still holds its mask (shifted with its image, clipped to its quarter)
    inner = boxes_from_masks(masks[visible])
    assert (inner[:, :2] >= boxes[visible][:, :2] - 1).all() and (inner[:, 2:] <= boxes[visible][:, 2:] + 1).all()


def test_strong_pipeline_gives_recipe_sized_consistent_samples():
    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), ["input.min_size=64", "input.max_size=64"])
    pipeline = build_transforms(recipe["input"], recipe["train"], train=True)
    assert isinstance(pipeline, StagedPipeline) and not pipeline.is_light
    for seed in range(6):
        image, target = pipeline(*_sample(60, 90, 3, seed))
        assert image.shape[-2:] == (64, 64)
        masks = target["masks"].as_subclass(torch.Tensor)
        assert len(masks) == len(target["labels"]) == len(target["boxes"])
        torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), boxes_from_masks(masks))
    pipeline.set_light(True)
    image, target = pipeline(*_sample(60, 90, 3, 0))
    assert max(image.shape[-2:]) == 64 and len(target["labels"]) <= 3  # the recipe resize, no partner images


def test_mixup_keeps_the_instances_of_both_images():
    mixup = MixUp(p=1.0)
    mixup(*_sample(64, 64, 2, 0))
    image, target = mixup(*_sample(64, 64, 3, 1))
    assert len(target["labels"]) == 5 and target["masks"].shape == (5, 64, 64)


class _Stage(Dataset):
    def __init__(self, pipeline: StagedPipeline):
        self.transforms = pipeline

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> bool:
        return self.transforms.is_light


def test_switch_reaches_persistent_workers():
    pipeline = build_mosaic_pipeline({"min_size": 64, "max_size": 64}, {"mosaic": True, "mixup": True})
    loader = DataLoader(_Stage(pipeline), batch_size=2, num_workers=1, persistent_workers=True)
    assert not next(iter(loader)).any()
    pipeline.set_light(True)
    assert next(iter(loader)).all()


def test_adamw_spares_norms_and_biases_from_weight_decay():
    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), ["input.min_size=64", "input.max_size=64"])
    from instaseg.models.factory import build_model

    model = build_model(recipe, 2, weights="none")
    opt = build_optimizer(model, recipe["train"])
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.backbone.stem[0].bn.weight) in no_decay_ids and id(model.head.rtm_cls[0].bias) in no_decay_ids
    assert id(model.backbone.stem[0].conv.weight) not in no_decay_ids
    trainable = {id(p) for p in model.parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)  # shared convs once
    sgd = build_optimizer(model, {**recipe["train"], "optimizer": "sgd", "lr": 0.02, "decay_norms_and_biases": None})
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1  # null: SGD decays every weight
    sgd = build_optimizer(model, {**recipe["train"], "optimizer": "sgd", "lr": 0.02})
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.05, 0.0]  # RTMDet's exemptions, explicit


def test_flat_cosine_schedule():
    lr = WarmupFlatCosineLR(warmup_iters=10, min_ratio=0.05, epochs=12)  # positions in epochs, as apply() gives
    assert lr.factor(0, 0.0) == pytest.approx(1e-5)
    assert lr.factor(10, 1.2) == lr.factor(500, 6.0) == 1.0
    values = [lr.factor(1000, 12 * p / 10) for p in range(5, 11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(0.05)
    assert lr.factor(1000, 9.0) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("epochs", [12, 300, 1000])
def test_flat_cosine_is_flat_for_the_first_half_of_a_real_run(epochs):
    """Through the callback's own path (step and epoch position read from the trainer), whatever the epoch count:
    the lr once fell to min_ratio a few steps in, because the position was scaled by the epochs twice."""
    from types import SimpleNamespace

    schedule = WarmupFlatCosineLR(warmup_iters=10, min_ratio=0.05, epochs=epochs)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule.base_lrs = [0.1]
    trainer = SimpleNamespace(optimizers=[optimizer], callbacks=[], estimated_stepping_batches=1000, global_step=0)
    seen = {}
    for step in (100, 400, 750, 1000):
        trainer.global_step = step
        schedule.apply(trainer)
        seen[step] = optimizer.param_groups[0]["lr"]
    assert seen[100] == seen[400] == pytest.approx(0.1)
    assert 0.005 < seen[750] < 0.1 and seen[1000] == pytest.approx(0.005)


def test_unknown_optimizer_or_schedule_is_a_user_error():
    recipe = load_recipe("rtmdet_ins_tiny")
    with pytest.raises(UserError, match="train.optimizer"):
        apply_overrides(recipe, ["train.optimizer=adam"])
    with pytest.raises(UserError, match="train.lr_schedule"):
        apply_overrides(recipe, ["train.lr_schedule=step"])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("shapes") / "data", num_images=8, img_size=64, seed=0)


def test_engine_trains_rtmdet_with_its_recipe(shapes, tmp_path, monkeypatch):
    """Same engine and outputs as Mask R-CNN: AdamW, flat-cosine, EMA, Mosaic + MixUp switched off halfway."""
    import instaseg.engine.train as train_mod
    from instaseg.engine.schedules import AugmentationSwitch
    from instaseg.models.factory import model_from_checkpoint

    seen = {}
    make = train_mod.build_trainer
    monkeypatch.setattr(train_mod, "build_trainer", lambda *a, **k: seen.setdefault("trainer", make(*a, **k)))
    result = train_mod.train("rtmdet_ins_tiny", shapes, out=tmp_path / "run", overrides=RUN)
    trainer = seen["trainer"]
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    switch = next(cb for cb in trainer.callbacks if isinstance(cb, AugmentationSwitch))
    assert switch.switched_at is not None and trainer.train_dataloader.dataset.transforms.is_light
    assert any(isinstance(cb, WarmupFlatCosineLR) for cb in trainer.callbacks)
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.004  # cooled down in the second half
    assert result["epochs_completed"] == 2 and "mask_AP" in result["best_metrics"]
    model, info = model_from_checkpoint(result["paths"]["best"])
    assert type(model).__name__ == "RTMDetIns" and info["recipe"]["model"]["architecture"] == "rtmdet_ins"
