"""Optimizer and learning-rate schedule chosen by the recipe, and the switch to lighter augmentation at the end.

- ``train.optimizer``: ``sgd`` (momentum, weight decay on every weight: the Mask R-CNN recipes) or ``adamw``
  (RTMDet's: no weight decay on normalisation weights and biases).
- ``train.lr_schedule``: ``plateau`` (linear warmup, then x plateau_factor when val mask AP stalls; see
  `WarmupPlateauLR`) or ``flat_cosine`` (linear warmup, flat until half of training, then cosine down to
  ``min_lr_ratio`` x lr at the end; RTMDet's).
- ``train.mosaic`` / ``train.mixup`` stop once ``mosaic_until`` of training has passed (RTMDet's last 20 of 300
  epochs run on the lighter pipeline).

"Training progress" is the larger of the epoch fraction and the fraction of the ``max_minutes`` budget used, so
a time-limited run still cools down and switches augmentation before its budget ends.

Every function here takes a complete train section (`instaseg.models.recipes.load_recipe` fills every key), so
the recipe's values are the only defaults: there are no fallbacks here to drift from `instaseg.config.DEFAULTS`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch

from instaseg.config import LR_SCHEDULES, OPTIMIZERS
from instaseg.errors import UserError


def _no_decay(name: str, param: torch.nn.Parameter, module_types: dict[str, type]) -> bool:
    owner = module_types.get(name.rsplit(".", 1)[0])
    is_norm = owner is not None and issubclass(
        owner, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    )
    return param.ndim <= 1 and (is_norm or name.endswith(".bias"))


def _is_backbone(name: str) -> bool:
    return name.startswith("backbone.")


def build_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters (shared ones once). Parameters under
    ``model.backbone`` learn at ``backbone_lr_mult`` x lr (DETR-style recipes fine-tune a pretrained backbone
    slowly); the schedules scale every group's own base lr, so the ratio holds throughout."""
    kind = cfg["optimizer"]
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    mult = float(cfg["backbone_lr_mult"])
    if kind not in OPTIMIZERS:
        raise UserError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}", record="train")
    types = {name: type(m) for name, m in model.named_modules()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():  # named_parameters lists a shared parameter once
        if p.requires_grad:
            exempt = kind == "adamw" and _no_decay(name, p, types)  # SGD decays every weight
            groups.setdefault((_is_backbone(name) and mult != 1.0, exempt), []).append(p)
    param_groups = [
        {"params": params, "lr": lr * (mult if backbone else 1.0), "weight_decay": 0.0 if exempt else wd}
        for (backbone, exempt), params in sorted(groups.items(), key=lambda item: item[0])
    ]  # the head's decayed group first: the lr that is logged
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    return torch.optim.AdamW(param_groups, lr=lr)


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


class WarmupFlatCosineLR(pl.Callback):
    """Linear warmup (from ``warmup_start`` x lr) for ``warmup_iters`` steps, flat until ``flat_until`` of
    training, then cosine to ``min_ratio`` x lr. Set every optimizer step from `training_progress`."""

    def __init__(
        self, warmup_iters: int = 1000, min_ratio: float = 0.05, flat_until: float = 0.5, warmup_start: float = 1e-5
    ):
        self.warmup_iters, self.min_ratio = int(warmup_iters), float(min_ratio)
        self.flat_until, self.warmup_start = float(flat_until), float(warmup_start)
        self.base_lrs: list[float] = []

    def factor(self, step: int, progress: float) -> float:
        warm = 1.0
        if step < self.warmup_iters:
            alpha = step / max(1, self.warmup_iters)
            warm = self.warmup_start * (1 - alpha) + alpha
        if progress <= self.flat_until:
            return warm
        t = (progress - self.flat_until) / max(1e-8, 1 - self.flat_until)
        return warm * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.base_lrs:
            self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        f = self.factor(trainer.global_step, training_progress(trainer))
        for group, base in zip(trainer.optimizers[0].param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state_dict["base_lrs"]]


class AugmentationSwitch(pl.Callback):
    """At each training epoch's start, past ``until`` of training, puts the train pipeline on its light stage.

    The pipeline (`instaseg.data.mosaic.StagedPipeline`) keeps its stage in shared memory, so DataLoader
    workers, persistent ones included, see the switch without being restarted.
    """

    def __init__(self, until: float):
        self.until = float(until)
        self.switched_at: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pipeline = _train_pipeline(trainer)
        if pipeline is None or not hasattr(pipeline, "set_light"):
            return
        light = training_progress(trainer) >= self.until
        if light and self.switched_at is None:
            self.switched_at = time.monotonic()
        pipeline.set_light(light)


def _train_pipeline(trainer: pl.Trainer) -> Any:
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    return getattr(dataset, "transforms", None)


def make_lr_callback(cfg: dict) -> pl.Callback:
    """The learning-rate callback of the recipe's ``lr_schedule``."""
    from instaseg.engine.callbacks import WarmupPlateauLR

    kind = cfg["lr_schedule"]
    if kind == "flat_cosine":
        return WarmupFlatCosineLR(int(cfg["warmup_iters"]), float(cfg["min_lr_ratio"]))
    if kind != "plateau":
        raise UserError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}", record="train")
    return WarmupPlateauLR(
        warmup_iters=int(cfg["warmup_iters"]),
        patience=int(cfg["plateau_patience"]),
        factor=float(cfg["plateau_factor"]),
    )


def make_schedule_callbacks(cfg: dict) -> list[pl.Callback]:
    """Learning-rate callback, plus the augmentation switch when the recipe uses Mosaic or MixUp."""
    callbacks = [make_lr_callback(cfg)]
    if cfg["mosaic"] or cfg["mixup"]:
        callbacks.append(AugmentationSwitch(float(cfg["mosaic_until"])))
    return callbacks
