"""Optimizer and learning-rate schedule chosen by the recipe, and the switch to lighter augmentation at the end.

- ``train.optimizer``: ``sgd`` (momentum) or ``adamw``; ``train.decay_norms_and_biases`` says whether weight decay
  reaches normalisation weights and biases (null: SGD decays every weight, as PaddleDetection's L2 regularizer and
  mmdetection's SGD recipes; AdamW spares them, as RTMDet's ``norm_decay_mult=0, bias_decay_mult=0``).
- ``train.lr_schedule`` (`instaseg.engine.lr_schedules`): ``multistep`` (x ``gamma`` after each of ``milestones``
  epochs), ``cosine`` (from the warmup's end to ``min_lr_ratio`` x lr at ``cosine_epochs``), ``flat_cosine`` (flat
  until half of training, then cosine to ``min_lr_ratio``; RTMDet's) or ``plateau`` (x ``plateau_factor`` when val
  mask AP stalls). Every one warms up linearly from ``warmup_start`` x lr over ``warmup_iters`` steps of
  ``base_batch`` images (or ``warmup_epochs``), and runs at the lr the linear scaling rule gives the actual total
  batch (`instaseg.engine.scaling`).
- ``train.mosaic`` / ``train.mixup`` stop once ``mosaic_until`` of training has passed (RTMDet's last 20 of 300
  epochs run on the lighter pipeline).

"Training progress" is the larger of the epoch fraction and the fraction of the ``max_minutes`` budget used, so
a time-limited run still cools down and switches augmentation before its budget ends.

Every function here takes a complete train section (`instaseg.models.recipes.load_recipe` fills every key), so
the recipe's values are the only defaults: there are no fallbacks here to drift from `instaseg.config.DEFAULTS`.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch

from instaseg.config import LR_SCHEDULES, OPTIMIZERS
from instaseg.engine.lr_schedules import (
    WarmupCosineLR,
    WarmupFlatCosineLR,
    WarmupLR,
    WarmupMultiStepLR,
    WarmupPlateauLR,
    training_progress,
)
from instaseg.engine.scaling import BatchScaling, batch_scaling
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
    decay_all = cfg.get("decay_norms_and_biases")  # null (the default): by the optimizer
    decay_all = kind == "sgd" if decay_all is None else bool(decay_all)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():  # named_parameters lists a shared parameter once
        if p.requires_grad:
            exempt = not decay_all and _no_decay(name, p, types)
            groups.setdefault((_is_backbone(name) and mult != 1.0, exempt), []).append(p)
    param_groups = [
        {"params": params, "lr": lr * (mult if backbone else 1.0), "weight_decay": 0.0 if exempt else wd}
        for (backbone, exempt), params in sorted(groups.items(), key=lambda item: item[0])
    ]  # the head's decayed group first: the lr that is logged
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    return torch.optim.AdamW(param_groups, lr=lr)


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


def make_lr_callback(cfg: dict, scaling: BatchScaling | None = None) -> WarmupLR:
    """The learning-rate callback of the recipe's ``lr_schedule``, at the lr and warmup of ``scaling`` (default:
    one device, so the recipe's batch alone)."""
    scaling = scaling or batch_scaling(cfg)
    kind = cfg["lr_schedule"]
    common: dict[str, Any] = {
        "epochs": int(cfg["epochs"]),
        "warmup_epochs": scaling.warmup_epochs,
        "lr_scale": scaling.lr_scale,
        "warmup_start": float(cfg["warmup_start"]),
    }
    steps = scaling.warmup_steps
    if kind == "multistep":
        return WarmupMultiStepLR(list(cfg["milestones"]), float(cfg["gamma"]), warmup_steps=steps, **common)
    if kind == "cosine":
        span = cfg["cosine_epochs"] or cfg["epochs"]
        return WarmupCosineLR(float(span), float(cfg["min_lr_ratio"]), warmup_steps=steps, **common)
    if kind == "flat_cosine":
        return WarmupFlatCosineLR(steps, float(cfg["min_lr_ratio"]), **common)
    if kind != "plateau":
        raise UserError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}", record="train")
    return WarmupPlateauLR(
        warmup_iters=steps, patience=int(cfg["plateau_patience"]), factor=float(cfg["plateau_factor"]), **common
    )


def make_schedule_callbacks(cfg: dict, scaling: BatchScaling | None = None) -> list[pl.Callback]:
    """Learning-rate callback, plus the augmentation switch when the recipe uses Mosaic or MixUp."""
    callbacks: list[pl.Callback] = [make_lr_callback(cfg, scaling)]
    if cfg["mosaic"] or cfg["mixup"]:
        callbacks.append(AugmentationSwitch(float(cfg["mosaic_until"])))
    return callbacks
