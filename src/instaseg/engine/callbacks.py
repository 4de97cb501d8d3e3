"""Training callbacks: weight EMA and atomic checkpoint files (the learning rate: `instaseg.engine.lr_schedules`).

Each keeps its state in plain types and tensors (``state_dict``/``load_state_dict``), so a Lightning checkpoint
restores it on ``--resume`` and still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from instaseg.utils.io import atomic_write

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


EMA_RAMP_STEPS = 2000  # the exponential ramp's time constant (mmdetection's ExpMomentumEMA gamma, PaddleDetection's)


class ModelEMA:
    """Exponential moving average of a model's state (parameters and float buffers).

    The decay ramps up over the first updates, so short runs average over their recent past instead of staying
    close to the random initialisation: after ``n`` updates it is ``min(decay, (1 + n) / (10 + n))`` with
    ``ramp="threshold"`` (PaddleDetection's default), ``decay x (1 - exp(-n / 2000))`` with ``"exponential"``
    (mmdetection's ExpMomentumEMA; PaddleDetection's ``ema_decay_type: exponential``).
    """

    def __init__(self, decay: float = 0.9998, ramp: str = "threshold"):
        if ramp not in ("threshold", "exponential"):
            raise ValueError(f"unknown EMA ramp {ramp!r}")
        self.decay, self.ramp = float(decay), ramp
        self.updates = 0
        self.state: dict[str, torch.Tensor] = {}

    def reset(self, model: torch.nn.Module) -> None:
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay of the update being made (``updates`` already counts it)."""
        if self.ramp == "exponential":
            return self.decay * (1 - math.exp(-self.updates / EMA_RAMP_STEPS))
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

    def __init__(self, decay: float = 0.9998, ramp: str = "threshold"):
        self.ema = ModelEMA(decay, ramp)
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
