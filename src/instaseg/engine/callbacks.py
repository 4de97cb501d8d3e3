"""Training callbacks: weight EMA, warmup then plateau learning rate, atomic checkpoint files.

Each keeps its state in plain types and tensors (``state_dict``/``load_state_dict``), so a Lightning checkpoint
restores it on ``--resume`` and still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from instaseg.utils.io import atomic_write

logger = logging.getLogger(__name__)

VAL_METRIC = "val/mask_AP"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the destination folder, then rename: a kill leaves the old file whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(Path(path), lambda tmp: _save_to_file(checkpoint, tmp))


def _save_to_file(checkpoint: dict[str, Any], tmp: Path) -> None:
    # through a Python file object a full disk surfaces as OSError(ENOSPC); torch's own writer turns it
    # into an anonymous RuntimeError that could not be told from a bug
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)


class ModelEMA:
    """Exponential moving average of a model's state (parameters and float buffers).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: short runs (a few hundred
    steps) then average over their recent past instead of staying close to the random initialisation.
    """

    def __init__(self, decay: float = 0.9998):
        self.decay = float(decay)
        self.updates = 0
        self.state: dict[str, torch.Tensor] = {}

    def reset(self, model: torch.nn.Module) -> None:
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        for name, value in model.state_dict().items():
            ema = self.state[name]
            if ema.dtype.is_floating_point:
                ema.lerp_(value.detach().to(ema.dtype), 1.0 - d)
            else:  # counters such as num_batches_tracked follow the model
                ema.copy_(value)

    def to(self, device: torch.device) -> ModelEMA:
        self.state = {k: v.to(device) for k, v in self.state.items()}
        return self

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            value.copy_(self.state[name])


class EMACallback(pl.Callback):
    """Keeps a `ModelEMA` of ``pl_module.model``; validation runs on the EMA weights, training on the raw ones.

    The raw weights are put back in ``on_validation_end`` before the checkpoint callbacks run, so a checkpoint's
    ``state_dict`` holds the raw weights (to resume) and its "instaseg" part the averaged ones.
    """

    def __init__(self, decay: float = 0.9998):
        self.ema = ModelEMA(decay)
        self._loaded: dict[str, Any] | None = None
        self._backup: dict[str, torch.Tensor] | None = None
        self._last_step = -1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = next(pl_module.model.parameters()).device
        if self._loaded is not None and "state" in self._loaded:
            self.ema.updates = int(self._loaded.get("updates", 0))
            self.ema.state = {k: v.to(device).clone() for k, v in self._loaded["state"].items()}
        else:
            self.ema.reset(pl_module.model)
        self._loaded = None
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step happened (not skipped or accumulating)
            self._last_step = trainer.global_step
            self.ema.update(pl_module.model)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.ema.state:
            return
        self._backup = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.ema.copy_to(pl_module.model)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._backup is None:
            return
        with torch.no_grad():
            for name, value in pl_module.model.state_dict().items():
                value.copy_(self._backup[name])
        self._backup = None

    # The averaged weights are stored once, as the checkpoint's "instaseg" model_state_dict (the module's
    # on_save_checkpoint puts them there); this callback's own state is only the counters.
    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.ema.decay, "updates": self.ema.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = {**(self._loaded or {}), "updates": state_dict["updates"]}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        weights = checkpoint.get("instaseg", {}).get("model_state_dict")
        if weights is not None:
            self._loaded = {**(self._loaded or {}), "state": weights}


def find_callback(trainer: pl.Trainer, kind: type) -> Any:
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


class WarmupPlateauLR(pl.Callback):
    """Linear warmup for ``warmup_iters`` optimizer steps, then ReduceLROnPlateau (mode max) on val mask AP.

    One callback owns the learning rate (``base * plateau_scale * warmup``) so the warmup never overwrites a
    plateau reduction and vice versa, which two stacked torch schedulers would do.
    """

    def __init__(
        self,
        warmup_iters: int = 200,
        patience: int = 3,
        factor: float = 0.1,
        warmup_start: float = 0.001,
        min_scale: float = 1e-3,
        threshold: float = 1e-4,
        monitor: str = VAL_METRIC,
    ):
        self.warmup_iters, self.patience, self.factor = int(warmup_iters), int(patience), float(factor)
        self.warmup_start, self.min_scale, self.threshold = float(warmup_start), float(min_scale), float(threshold)
        self.monitor = monitor
        self.base_lrs: list[float] = []
        self.scale = 1.0
        self.best: float | None = None
        self.bad_checks = 0

    def warmup_factor(self, step: int) -> float:
        if step >= self.warmup_iters:
            return 1.0
        alpha = step / max(1, self.warmup_iters)
        return self.warmup_start * (1 - alpha) + alpha

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.base_lrs:  # a resumed run keeps the base learning rates it started with
            self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in trainer.optimizers[0].param_groups]
        self._apply(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._apply(trainer)

    def _apply(self, trainer: pl.Trainer) -> None:
        factor = self.scale * self.warmup_factor(trainer.global_step)
        for group, base in zip(trainer.optimizers[0].param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

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
            self.scale = max(self.scale * self.factor, self.min_scale)
            self.bad_checks = 0
            logger.info("%s flat for %d validations: learning rate x%g", self.monitor, self.patience + 1, self.factor)
        self._apply(trainer)

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
