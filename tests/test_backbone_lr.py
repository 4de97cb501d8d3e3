"""``train.backbone_lr_mult``: parameters under ``model.backbone`` learn at a multiple of the recipe's lr, for any
architecture, and the warmup/decay schedules keep the ratio."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instaseg.engine.lr_schedules import WarmupFlatCosineLR
from instaseg.engine.schedules import build_optimizer
from instaseg.errors import UserError
from instaseg.models.recipes import apply_overrides, load_recipe


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


def _lr_of(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> float:
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_backbone_parameters_learn_at_the_multiple(kind: str) -> None:
    model = _Toy()
    cfg = {"optimizer": kind, "lr": 0.01, "weight_decay": 0.05, "momentum": 0.9, "backbone_lr_mult": 0.1}
    optimizer = build_optimizer(model, cfg)
    assert _lr_of(optimizer, model.backbone[0].weight) == pytest.approx(0.001)
    assert _lr_of(optimizer, model.backbone[1].weight) == pytest.approx(0.001)
    assert _lr_of(optimizer, model.head.weight) == pytest.approx(0.01)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # the logged lr is the head's
    count = sum(len(g["params"]) for g in optimizer.param_groups)
    assert count == len(list(model.parameters()))
    if kind == "adamw":  # decay exemptions are unchanged by the split
        bn_group = next(g for g in optimizer.param_groups if any(p is model.backbone[1].weight for p in g["params"]))
        assert bn_group["weight_decay"] == 0.0


def test_without_a_multiple_the_groups_are_as_before() -> None:
    model = _Toy()
    cfg = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "momentum": 0.9, "backbone_lr_mult": 1.0}
    assert len(build_optimizer(model, cfg).param_groups) == 2  # decayed, exempt
    assert len(build_optimizer(model, {**cfg, "optimizer": "sgd"}).param_groups) == 1


def test_schedule_keeps_the_ratio() -> None:
    model = _Toy()
    cfg = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9, "backbone_lr_mult": 0.05}
    optimizer = build_optimizer(model, cfg)
    schedule = WarmupFlatCosineLR(warmup_iters=10, min_ratio=0.05)
    schedule.base_lrs = [g["lr"] for g in optimizer.param_groups]
    factor = schedule.factor(3, 0.8)
    for group, base in zip(optimizer.param_groups, schedule.base_lrs, strict=True):
        group["lr"] = base * factor
    assert _lr_of(optimizer, model.backbone[0].weight) / _lr_of(optimizer, model.head.weight) == pytest.approx(0.05)


def test_recipes_take_the_key_and_reject_negatives() -> None:
    assert load_recipe("mask_rtdetr_l")["train"]["backbone_lr_mult"] == 0.05
    assert load_recipe("maskrcnn_fast")["train"]["backbone_lr_mult"] == 1.0
    with pytest.raises(UserError, match="backbone_lr_mult"):
        apply_overrides(load_recipe("maskrcnn_fast"), ["train.backbone_lr_mult=-1"])
