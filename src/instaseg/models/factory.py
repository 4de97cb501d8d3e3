"""Detectors from recipes and checkpoints: the one place that builds a model and loads weights into it.

It sits above the registry (name -> architecture), the recipes (complete, validated model sections), the weights
(downloads, files) and the checkpoints (files), and none of those imports it back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from instaseg.errors import UserError
from instaseg.models.checkpoint import check_payload, load_checkpoint, state_mismatch
from instaseg.models.detector import Detector
from instaseg.models.recipes import load_recipe
from instaseg.models.registry import architecture
from instaseg.models.weights.loading import load_coco_weights, load_weights_file

__all__ = ["build_architecture", "build_model", "model_from_checkpoint"]

log = logging.getLogger("instaseg")


def build_architecture(
    recipe: dict, num_classes: int, download_backbone: bool = False, freeze: bool = False
) -> Detector:
    """The bare detector of a complete recipe: random init (or ImageNet backbone), no weight loading or warnings.

    `freeze` stops gradients in the backbone's first stages (`model.frozen_stages`), for pretrained starts.
    """
    name = recipe["model"]["architecture"]
    model = architecture(name).build(recipe, num_classes, download_backbone, freeze)
    if not isinstance(model, Detector):
        raise TypeError(f"architecture {name!r} built a {type(model).__name__}, not a Detector")
    try:
        model.set_resize_rule(recipe["input"]["resize"] == "keep_ratio")
    except NotImplementedError as e:
        raise UserError(str(e), record="input.resize") from None
    return model


def build_model(recipe: dict | str, num_classes: int, weights: str | None = None) -> Detector:
    """A detector for `num_classes` foreground classes (labels 1..K, 0 is background).

    `weights`: "none" (random init), "imagenet" (pretrained backbone), "coco" (the recipe's torchvision COCO
    checkpoint, class layers re-initialised when K differs), a PATH (instaseg checkpoint or state_dict), or None
    for the recipe's `model.weights`.
    """
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


def _has_frozen_norm(model: Detector) -> bool:
    return any(type(m).__name__.startswith("FrozenBatchNorm") for m in model.modules())  # torchvision and timm


def model_from_checkpoint(
    path_or_dict: str | Path | dict, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, info) from a checkpoint path or a loaded checkpoint / its "instaseg" part.

    info = the "instaseg" part without the weights: recipe, class_names, category_ids, input, version (+ path).
    """
    if isinstance(path_or_dict, Mapping):
        part = path_or_dict.get("instaseg", path_or_dict)
        info, source = check_payload(part, None), None
    else:
        info, source = load_checkpoint(path_or_dict), str(path_or_dict)
    recipe = load_recipe(dict(info["recipe"], input=dict(info["input"])))
    model = build_architecture(recipe, len(info["class_names"]))
    problem = state_mismatch(model.state_dict(), info["model_state_dict"])
    if problem:
        raise UserError(f"checkpoint weights do not fit its recipe's model ({problem})", source)
    model.load_state_dict(info["model_state_dict"])
    info = {k: v for k, v in info.items() if k != "model_state_dict"}
    info["recipe"] = recipe
    if source:
        info["path"] = source
    return model.to(device).eval(), info
