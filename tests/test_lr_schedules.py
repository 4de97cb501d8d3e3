"""Learning-rate schedules and the linear scaling rule: multi-step at its milestones, cosine from the warmup's end,
warmup in steps or epochs, and the lr a run on more devices (or a larger batch, or gradient accumulation) trains at."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from instaseg.engine.callbacks import ModelEMA
from instaseg.engine.lr_schedules import WarmupCosineLR, WarmupLR, WarmupMultiStepLR
from instaseg.engine.scaling import batch_scaling
from instaseg.engine.schedules import make_lr_callback
from instaseg.engine.train import build_trainer
from instaseg.errors import UserError
from instaseg.models.recipes import apply_overrides, load_recipe


class _Toy(pl.LightningModule):
    """One weight; records the lr of every optimizer step and the epoch it fell in."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, self.trainer.optimizers[0].param_groups[0]["lr"]))
        return (self.w - batch[0].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback: pl.Callback, epochs: int, steps_per_epoch: int = 3, accumulate: int = 1) -> list[tuple[int, float]]:
    data = DataLoader(TensorDataset(torch.arange(steps_per_epoch * accumulate, dtype=torch.float32)), batch_size=1)
    model = _Toy()
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[callback], accumulate_grad_batches=accumulate, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    return model.seen


def test_multistep_drops_at_each_milestone_epoch() -> None:
    lr = WarmupMultiStepLR([2, 3], gamma=0.1, warmup_steps=0, epochs=4)
    seen = _fit(lr, epochs=4)
    by_epoch = {epoch: {round(v, 12) for e, v in seen if e == epoch} for epoch in range(4)}
    assert by_epoch == {0: {0.1}, 1: {0.1}, 2: {0.01}, 3: {0.001}}


def test_multistep_factor_at_the_published_milestones() -> None:
    """SOLOv2 3x (mmdetection): x0.1 after epochs 27 and 33 of 36; Mask R-CNN 1x: after 8 and 11 of 12."""
    solo = WarmupMultiStepLR([27, 33], gamma=0.1, warmup_steps=500, warmup_start=1 / 3, epochs=36)
    assert solo.factor(10_000, 26.99) == 1.0
    assert solo.factor(10_000, 27.0) == pytest.approx(0.1)
    assert solo.factor(10_000, 32.99) == pytest.approx(0.1)
    assert solo.factor(10_000, 33.0) == pytest.approx(0.01)
    assert solo.factor(0, 0.0) == pytest.approx(1 / 3) and solo.factor(250, 0.01) == pytest.approx(2 / 3)
    rcnn = WarmupMultiStepLR([8, 11], gamma=0.1, warmup_steps=1000, epochs=12)
    assert [rcnn.factor(99_999, e) for e in (7.9, 8.0, 10.9, 11.0, 11.9)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


def test_multistep_milestones_follow_a_step_budget() -> None:
    """With max_steps ending training early, the milestones fall at the same share of the budget."""
    lr = WarmupMultiStepLR([2], gamma=0.1, warmup_steps=0, epochs=4)
    data = DataLoader(TensorDataset(torch.zeros(10)), batch_size=1)
    model = _Toy()
    trainer = pl.Trainer(max_epochs=4, max_steps=8, callbacks=[lr], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    lrs = [v for _, v in model.seen]
    assert lrs[:4] == pytest.approx([0.1] * 4) and lrs[4:] == pytest.approx([0.01] * 4)


def test_cosine_starts_after_the_warmup_and_spans_cosine_epochs() -> None:
    """PaddleDetection's CosineDecay after LinearWarmup: cos((i - warmup) pi / (max - warmup)), over max_epochs that
    may lie past the last epoch trained (PP-YOLOE-seg: 96 of 80)."""
    lr = WarmupCosineLR(cosine_epochs=96, min_ratio=0.0, warmup_steps=None, warmup_epochs=5, warmup_start=0.0,
                        epochs=80)  # fmt: skip
    lr.warmup_steps, lr._warmup_epochs_done = 50, 5.0  # 10 steps per epoch, as on_train_start sets them
    assert lr.factor(0, 0.0) == 0.0 and lr.factor(25, 2.5) == pytest.approx(0.5)  # warmup from 0
    assert lr.factor(50, 5.0) == pytest.approx(1.0)  # the cosine starts where the warmup ends
    assert lr.factor(505, 50.5) == pytest.approx(0.5)  # its middle, (5 + 96) / 2 epochs
    assert lr.factor(800, 80.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 75 / 91)))  # stopped at 80: 0.067


def test_warmup_in_epochs_counts_the_epoch_length() -> None:
    lr = WarmupLR(warmup_steps=None, warmup_epochs=1, warmup_start=0.0, epochs=2)
    seen = _fit(lr, epochs=2, steps_per_epoch=4)
    assert lr.warmup_steps == 4
    assert [v for _, v in seen] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])


def test_warmup_counts_optimizer_steps_under_accumulation() -> None:
    lr = WarmupLR(warmup_steps=None, warmup_epochs=1, warmup_start=0.0, epochs=1)
    _fit(lr, epochs=1, steps_per_epoch=3, accumulate=2)
    assert lr.warmup_steps == 3  # 6 batches, 3 optimizer steps


@pytest.mark.parametrize(
    ("devices", "nodes", "batch", "accumulate", "lr", "warmup"),
    [(1, 1, 1, 1, 0.00125, 8000), (2, 1, 1, 1, 0.0025, 4000), (8, 1, 1, 1, 0.01, 1000), (2, 2, 2, 1, 0.01, 1000),
     (1, 1, 2, 4, 0.01, 1000)],
)  # fmt: skip
def test_linear_scaling_rule(devices: int, nodes: int, batch: int, accumulate: int, lr: float, warmup: int) -> None:
    """maskrcnn_r50_fpn states PaddleDetection's 0.01 for 8 images and 1000 warmup steps; every way of reaching a
    total batch (devices, nodes, per-device batch, accumulation) gives the lr and warmup images of that total."""
    recipe = apply_overrides(load_recipe("maskrcnn_r50_fpn"), [f"train.batch_size={batch}",
                                                                f"train.accumulate={accumulate}"])  # fmt: skip
    scaling = batch_scaling(recipe["train"], devices, nodes, "mask_rcnn_r50_fpn_1x_coco")
    assert scaling.total_batch == devices * nodes * batch * accumulate
    assert scaling.lr == pytest.approx(lr) and scaling.warmup_steps == warmup
    line = scaling.describe()
    assert f"learning rate {lr:g}" in line and "the published 0.01 for 8 images" in line, line


def test_two_devices_train_at_the_documented_lr(tmp_path) -> None:
    """`--devices 2` with maskrcnn_r50_fpn (1 image per device): 0.01 x 2 / 8 = 0.0025, as the README documents."""
    recipe = load_recipe("maskrcnn_r50_fpn")
    trainer = build_trainer(recipe, tmp_path, "cpu", devices=2, num_nodes=1)
    lr = next(cb for cb in trainer.callbacks if isinstance(cb, WarmupLR))
    assert isinstance(lr, WarmupMultiStepLR) and lr.milestones == [8, 11]
    assert lr.lr_scale == pytest.approx(2 / 8) and lr.warmup_steps == 4000
    lr.base_lrs = [0.01]  # the optimizer's group, as build_optimizer makes it from train.lr
    assert lr.lr_scale * lr.base_lrs[0] * lr.factor(10**6, 0.0) == pytest.approx(0.0025)
    one = next(cb for cb in build_trainer(recipe, tmp_path, "cpu", 1, 1).callbacks if isinstance(cb, WarmupLR))
    assert one.lr_scale == pytest.approx(1 / 8) and one.warmup_steps == 8000


def test_base_batch_null_keeps_the_lr_as_written() -> None:
    recipe = apply_overrides(load_recipe("maskrcnn_r50_fpn"), ["train.base_batch=null"])
    scaling = batch_scaling(recipe["train"], devices=4)
    assert scaling.lr == 0.01 and scaling.warmup_steps == 1000 and "as the recipe states it" in scaling.describe()


def test_schedule_keys_are_checked() -> None:
    recipe = load_recipe("maskrcnn_r50_fpn")
    for bad in ("train.milestones=[11, 8]", "train.gamma=2", "train.warmup_start=-0.1", "train.base_batch=0",
                "train.accumulate=0", "train.lr_schedule=step", "train.ema_ramp=linear"):  # fmt: skip
        with pytest.raises(UserError):
            apply_overrides(recipe, [bad])
    assert make_lr_callback(apply_overrides(recipe, ["train.lr_schedule=cosine"])["train"]).cosine_epochs == 12


def test_ema_exponential_ramp() -> None:
    """mmdetection's ExpMomentumEMA and PaddleDetection's exponential ramp: decay x (1 - exp(-n / 2000))."""
    ema = ModelEMA(0.9998, ramp="exponential")
    ema.updates = 1
    assert ema.current_decay() == pytest.approx(0.9998 * (1 - math.exp(-1 / 2000)))
    ema.updates = 2000
    assert ema.current_decay() == pytest.approx(0.9998 * (1 - math.exp(-1)))
    ema.updates = 50000
    assert ema.current_decay() == pytest.approx(0.9998, abs=1e-9)
    threshold = ModelEMA(0.9998)
    threshold.updates = 1
    assert threshold.current_decay() == pytest.approx(2 / 11)
