"""Model registry: recipe -> detector. One face, `build_model(recipe, num_classes, weights)`, for every architecture.

An architecture registers a builder and its model-section defaults; recipes (yaml, see `instaseg.config`) pick an
architecture and set its keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from instaseg.config import list_recipes, load_recipe
from instaseg.errors import UserError

__all__ = [
    "ARCHITECTURES",
    "build_architecture",
    "build_model",
    "list_recipes",
    "load_recipe",
    "model_defaults",
    "validate_model",
]

log = logging.getLogger("instaseg")


@dataclass(frozen=True)
class Architecture:
    build: Callable[[dict, int, bool, bool], nn.Module]  # (recipe, num_classes, download_backbone, freeze)
    defaults: dict[str, Any]
    validate: Callable[[dict, str | None], None]  # (complete model section, source) -> raises UserError


def _maskrcnn() -> Architecture:
    from instaseg.models import maskrcnn

    return Architecture(maskrcnn.build_maskrcnn, maskrcnn.DEFAULTS, maskrcnn.validate_model_section)


def _rtmdet_ins() -> Architecture:
    from instaseg.models import rtmdet_ins

    return Architecture(rtmdet_ins.build_rtmdet_ins, rtmdet_ins.DEFAULTS, rtmdet_ins.validate_model_section)


# Imported on first use: listing recipes must not pay for torchvision's detection models.
ARCHITECTURES: dict[str, Callable[[], Architecture]] = {"maskrcnn": _maskrcnn, "rtmdet_ins": _rtmdet_ins}


def _architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}", record="model")
    return ARCHITECTURES[name]()


def model_defaults(architecture: str) -> dict[str, Any]:
    return dict(_architecture(architecture).defaults)


def validate_model(recipe: dict, source: str | None = None) -> None:
    _architecture(recipe["model"]["architecture"]).validate(recipe["model"], source)


def _has_frozen_norm(model: nn.Module) -> bool:
    return any(type(m).__name__.startswith("FrozenBatchNorm") for m in model.modules())  # torchvision and timm


def build_architecture(
    recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False
) -> nn.Module:
    """The bare detector of a complete recipe: random init (or ImageNet backbone), no weight loading or warnings.

    `freeze` stops gradients in the backbone's first stages (`model.frozen_stages`), for pretrained starts.
    """
    return _architecture(recipe["model"]["architecture"]).build(recipe, num_classes, download_backbone, freeze)


def build_model(recipe: dict | str, num_classes: int, weights: str | None = None) -> nn.Module:
    """A torchvision-style detector for `num_classes` foreground classes (labels 1..K, 0 is background).

    `weights`: "none" (random init), "imagenet" (pretrained backbone), "coco" (the recipe's torchvision COCO
    checkpoint, class layers re-initialised when K differs), a PATH (instaseg checkpoint or state_dict), or None
    for the recipe's `model.weights`.
    """
    from instaseg.models.weights import load_coco_weights, load_weights_file

    recipe = load_recipe(recipe)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    choice = str(weights if weights is not None else recipe["model"]["weights"])
    if choice.lower() in ("none", "imagenet", "coco"):
        choice = choice.lower()
    elif not Path(choice).is_file():
        raise UserError("weights file not found (use none, imagenet, coco or a checkpoint path)", choice)
    pretrained = choice != "none"
    model = build_architecture(recipe, num_classes, download_backbone=choice == "imagenet", freeze=pretrained)
    if choice == "coco":
        load_coco_weights(model, recipe["model"].get("coco_weights"), recipe["name"])
    elif pretrained and choice != "imagenet":
        load_weights_file(model, choice)
    if not pretrained and _has_frozen_norm(model):
        log.warning(
            "recipe %s freezes BatchNorm, which suits pretrained weights; from scratch, -o model.norm=bn trains better",
            recipe["name"],
        )
    return model
