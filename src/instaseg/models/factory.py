"""Detectors from recipes and checkpoints: the one place that builds a model and loads weights into it.

It sits above the registry (name -> architecture), the recipes (complete, validated model sections), the weights
(downloads, files) and the checkpoints (files), and none of those imports it back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from instaseg.errors import UserError
from instaseg.models.checkpoint import check_payload, load_checkpoint, save_checkpoint, state_mismatch
from instaseg.models.detector import Detector
from instaseg.models.recipes import load_recipe
from instaseg.models.registry import architecture
from instaseg.models.weights.loading import load_coco_weights, load_published, load_weights_path, open_weights
from instaseg.models.weights.published import by_name, choose, coco_classes, fetch, matching

__all__ = ["build_architecture", "build_model", "checkpoint_from_weights", "model_from_checkpoint"]

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

    `weights`: "none" (random init), "imagenet" (pretrained backbone), "coco" (the recipe's COCO checkpoint: a
    publisher's, converted, or torchvision's; class layers re-initialised when K differs), a publisher's name for
    published weights (`instaseg models NAME` lists them), a PATH (an instaseg checkpoint, a state_dict, or a
    publisher's file, converted), or None for the recipe's `model.weights`.
    """
    recipe = load_recipe(recipe)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    choice = str(weights if weights is not None else recipe["model"]["weights"])
    if choice.lower() in ("none", "imagenet", "coco"):
        choice = choice.lower()
    published = architecture(recipe["model"]["architecture"]).published
    entry = None if choice == "none" else choose(published, recipe["model"], choice, recipe["name"])
    if choice == recipe["model"].get("coco_weights"):  # torchvision's COCO checkpoint, by its name
        choice, entry = "coco", None
    elif choice == "coco" and recipe["model"].get("coco_weights"):
        # the checkpoint this recipe equals exactly (torchvision's conventions) before a publisher's trained with
        # other ones (PaddleX's, by its name)
        entry = None
    if entry is None and choice not in ("none", "imagenet", "coco") and not Path(choice).is_file():
        other = by_name(published, choice)
        if other is not None:
            wanted = ", ".join(f"model.{k}={v}" for k, v in other.model.items())
            raise UserError(f"{other.publisher}'s {other.name} is for {wanted}; recipe {recipe['name']} differs")
        raise UserError("weights file not found (use none, imagenet, coco, a published name or a path)", choice)
    pretrained = choice != "none"
    download = choice == "imagenet" and entry is None  # through torchvision or timm
    model = build_architecture(recipe, num_classes, download_backbone=download, freeze=pretrained)
    if entry is not None:
        load_published(model, entry, fetch(entry), _shapes(recipe), recipe["name"])
    elif choice == "coco":
        load_coco_weights(model, recipe["model"].get("coco_weights"), recipe["name"])
    elif pretrained and choice != "imagenet":
        candidates = matching(published, recipe["model"], recipe["name"])
        load_weights_path(model, Path(choice), published, candidates, _shapes(recipe), recipe["name"])
    if not pretrained and _has_frozen_norm(model):
        log.warning(
            "recipe %s freezes BatchNorm, which suits pretrained weights; from scratch, -o model.norm=bn trains better",
            recipe["name"],
        )
    return model


def _shapes(recipe: dict) -> Callable[[int], dict]:
    """Our model's state_dict for a class count, built on the meta device: names and shapes, no memory."""

    def shapes(num_classes: int) -> dict:
        with torch.device("meta"):
            return build_architecture(recipe, num_classes).state_dict()

    return shapes


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


def checkpoint_from_weights(weights: str | Path, recipe: dict | str, out: str | Path) -> dict:
    """Write an instaseg checkpoint of a publisher's COCO model: ``weights`` is its file (converted on the fly) or
    its name (downloaded into the cache), ``recipe`` the recipe it fits. The class names are those the file
    records, else COCO's 80 (with their category ids). Returns what was written."""
    recipe = load_recipe(recipe)
    published = architecture(recipe["model"]["architecture"]).published
    entry = None if Path(weights).is_file() else choose(published, recipe["model"], str(weights), recipe["name"])
    path = fetch(entry) if entry is not None else Path(weights)
    file = open_weights(path)  # read once: for the class names it records, then to load
    names = file.publisher_tensors()[1].get("class_names")
    coco_names, coco_ids = coco_classes()
    names = names or coco_names
    ids = coco_ids if names == coco_names else list(range(1, len(names) + 1))
    model = build_architecture(recipe, len(names))
    shapes, candidates = _shapes(recipe), matching(published, recipe["model"], recipe["name"])
    if entry is not None:
        report = load_published(model, entry, file, shapes, recipe["name"])
    else:
        report = load_weights_path(model, file, published, candidates, shapes, recipe["name"])
    if report.get("kind") != "coco":
        raise UserError("not a publisher's COCO detector (an ImageNet backbone trains with --weights FILE)", path)
    written = save_checkpoint(out, model, recipe, names, ids)
    return {"path": str(written), "source": str(path), "classes": len(names), **report}
