"""Learning-rate schedules: a linear warmup times one main schedule, each a Lightning callback that owns the lr.

One callback sets every parameter group's lr before each optimizer step as ``base x scale x warmup x main``:

- ``base``: the group's lr as the optimizer was built (the recipe's ``train.lr``, times ``backbone_lr_mult`` for the
  backbone's groups), kept in the callback's state so a resumed run starts from the same bases;
- ``scale``: the linear scaling rule's factor for this run's total batch (`instaseg.engine.scaling`);
- ``warmup``: linear from ``warmup_start`` to 1 over ``warmup_steps`` optimizer steps (or ``warmup_epochs``);
- ``main``: the schedule of the recipe's ``train.lr_schedule``, a function of the position in training counted in
  epochs (`epoch_position`), so milestones and cosine lengths read as the published configs write them.

Warmup and main multiply, as mmdetection's chained LinearLR and MultiStepLR do; PaddleDetection's warmup replaces
the main schedule instead, which gives the same numbers as long as no milestone falls inside the warmup.
``WarmupPlateauLR`` (main: x ``factor`` whenever val mask AP stalls) lives here too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl

from instaseg.engine.callbacks import VAL_METRIC

logger = logging.getLogger(__name__)


def training_progress(trainer: pl.Trainer) -> float:
    """Fraction of training done, in [0, 1]: optimizer steps over planned steps, or time over the budget."""
    from lightning.pytorch.callbacks import Timer

    total = trainer.estimated_stepping_batches
    steps = trainer.global_step / total if total and math.isfinite(total) else 0.0
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    used = 0.0
    if timer is not None and timer._duration:
        used = timer.time_elapsed("train") / timer._duration
    return float(min(1.0, max(steps, used)))


def steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimizer steps in one training epoch (each process's batches over gradient accumulation)."""
    batches = trainer.num_training_batches
    if not batches or not math.isfinite(batches):
        return 1
    return max(1, int(batches) // max(1, int(trainer.accumulate_grad_batches)))


def epoch_position(trainer: pl.Trainer, epochs: int) -> float:
    """Where training stands, in epochs of ``epochs``: optimizer steps over steps per epoch, or, when a step or
    time budget ends training first, the same share of ``epochs`` (milestones and cosines then fit the budget)."""
    return training_progress(trainer) * float(epochs)


class WarmupLR(pl.Callback):
    """Linear warmup times ``main_factor`` (1 here: a constant lr after the warmup); see the module notes.

    ``warmup_steps``: optimizer steps of warmup, or None with ``warmup_epochs`` set (converted once the epoch
    length is known). ``lr_scale``: the linear scaling rule's factor for this run.
    """

    def __init__(
        self,
        warmup_steps: int | None = 500,
        warmup_start: float = 0.001,
        epochs: int = 12,
        warmup_epochs: float | None = None,
        lr_scale: float = 1.0,
    ):
        self.warmup_steps = None if warmup_steps is None else int(warmup_steps)
        self.warmup_epochs = None if warmup_epochs is None else float(warmup_epochs)
        self.warmup_start, self.epochs, self.lr_scale = float(warmup_start), int(epochs), float(lr_scale)
        self.base_lrs: list[float] = []

    # ---- the schedule ----
    def warmup_factor(self, step: int) -> float:
        steps = self.warmup_steps or 0
        if step >= steps:
            return 1.0
        alpha = step / steps
        return self.warmup_start * (1 - alpha) + alpha

    def main_factor(self, position: float) -> float:
        """The schedule after (and under) the warmup at ``position`` epochs into training."""
        return 1.0

    def factor(self, step: int, position: float) -> float:
        return self.warmup_factor(step) * self.main_factor(position)

    # ---- Lightning hooks ----
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.base_lrs:  # a resumed run keeps the base learning rates it started with
            self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in trainer.optimizers[0].param_groups]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.warmup_epochs is not None:  # the epoch length is known once the data loader is
            self.warmup_steps = round(self.warmup_epochs * steps_per_epoch(trainer))
        self.apply(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.apply(trainer)

    def apply(self, trainer: pl.Trainer) -> None:
        f = self.lr_scale * self.factor(trainer.global_step, epoch_position(trainer, self.epochs))
        for group, base in zip(trainer.optimizers[0].param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state_dict["base_lrs"]]


class WarmupMultiStepLR(WarmupLR):
    """x ``gamma`` after each of ``milestones`` (epochs): mmdetection's MultiStepLR, PaddleDetection's
    PiecewiseDecay (whose scalar gamma is this gamma, milestone after milestone)."""

    def __init__(self, milestones: list[float], gamma: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.milestones, self.gamma = [float(m) for m in milestones], float(gamma)

    def main_factor(self, position: float) -> float:
        # a hair below the boundary counts as on it: float progress at the exact step of a milestone
        passed = sum(1 for m in self.milestones if position >= m - 1e-9)
        return self.gamma**passed


class WarmupCosineLR(WarmupLR):
    """Cosine from the end of the warmup down to ``min_ratio`` at ``cosine_epochs``: PaddleDetection's CosineDecay
    (whose ``max_epochs`` may lie past the last epoch trained: PP-YOLOE's 96 of 80)."""

    def __init__(self, cosine_epochs: float, min_ratio: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.cosine_epochs, self.min_ratio = float(cosine_epochs), float(min_ratio)
        self._warmup_epochs_done = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._warmup_epochs_done = (self.warmup_steps or 0) / steps_per_epoch(trainer)

    def main_factor(self, position: float) -> float:
        start = self._warmup_epochs_done
        t = (position - start) / max(1e-8, self.cosine_epochs - start)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


class WarmupFlatCosineLR(WarmupLR):
    """Flat until ``flat_until`` of training, then cosine to ``min_ratio`` at the end (RTMDet's: flat for 150 of
    300 epochs). Like every schedule here, ``factor(step, position)`` takes the position in epochs."""

    def __init__(
        self, warmup_iters: int = 1000, min_ratio: float = 0.05, flat_until: float = 0.5, warmup_start: float = 1e-5,
        **kwargs: Any,
    ):  # fmt: skip
        super().__init__(warmup_steps=warmup_iters, warmup_start=warmup_start, **kwargs)
        self.min_ratio, self.flat_until = float(min_ratio), float(flat_until)

    @property
    def warmup_iters(self) -> int:
        return self.warmup_steps or 0

    def main_factor(self, position: float) -> float:
        progress = position / max(1, self.epochs)
        if progress <= self.flat_until:
            return 1.0
        t = (progress - self.flat_until) / max(1e-8, 1 - self.flat_until)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class WarmupPlateauLR(WarmupLR):
    """Linear warmup, then x ``factor`` whenever val mask AP has not improved for more than ``patience``
    validations (ReduceLROnPlateau, mode max). One callback owns the lr (``base * plateau scale * warmup``), so the
    warmup never overwrites a plateau reduction and vice versa, as two stacked torch schedulers would."""

    def __init__(
        self,
        warmup_iters: int = 200,
        patience: int = 3,
        factor: float = 0.1,
        warmup_start: float = 0.001,
        min_scale: float = 1e-3,
        threshold: float = 1e-4,
        monitor: str = VAL_METRIC,
        **kwargs: Any,
    ):
        super().__init__(warmup_steps=warmup_iters, warmup_start=warmup_start, **kwargs)
        self.patience, self.plateau_factor = int(patience), float(factor)
        self.min_scale, self.threshold, self.monitor = float(min_scale), float(threshold), monitor
        self.scale = 1.0
        self.best: float | None = None
        self.bad_checks = 0

    @property
    def warmup_iters(self) -> int:
        return self.warmup_steps or 0

    def main_factor(self, position: float) -> float:
        return self.scale

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.apply(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        value = float(value)
        if math.isnan(value):
            value = -math.inf
        if self._improved(value):
            self.best, self.bad_checks = value, 0
            return
        self.bad_checks += 1
        if self.bad_checks > self.patience and self.scale > self.min_scale:
            self.scale = max(self.scale * self.plateau_factor, self.min_scale)
            self.bad_checks = 0
            logger.info(
                "%s flat for %d validations: learning rate x%g", self.monitor, self.patience + 1, self.plateau_factor
            )
        self.apply(trainer)

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isinf(self.best):
            return value > -math.inf if self.best is None else value > self.best
        return value > self.best + self.threshold * abs(self.best)  # relative threshold, as torch's 'rel' mode

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "scale": self.scale, "best": self.best, "bad_checks": self.bad_checks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state_dict["base_lrs"]]
        self.scale = float(state_dict["scale"])
        self.best = state_dict["best"]
        self.bad_checks = int(state_dict["bad_checks"])
