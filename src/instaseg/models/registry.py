"""Model registry: architecture name -> its package, and one face, `build_model(recipe, num_classes, weights)`,
for every architecture.

Registering an architecture is one line in `ARCHITECTURES`: its name and the package that exports
``ARCHITECTURE`` (an `instaseg.models.detector.Architecture`: builder, model defaults, value rules, recipe
defaults). Its recipes (yaml) pick it by ``model.architecture``. Everything else in instaseg (training, the
predictor, export, the benchmark, the conformance tests) then works through the `Detector` contract.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from instaseg.errors import UserError
from instaseg.models.detector import Architecture, Detector

__all__ = ["ARCHITECTURES", "architecture", "build_architecture", "build_model", "model_defaults"]

log = logging.getLogger("instaseg")

# name -> package exporting ARCHITECTURE; imported on first use, so listing recipes pays only for what it lists
ARCHITECTURES: dict[str, str] = {
    "maskrcnn": "instaseg.models.maskrcnn",
    "cascade_maskrcnn": "instaseg.models.cascade",
    "rtmdet_ins": "instaseg.models.rtmdet_ins",
    "solov2": "instaseg.models.solov2",
    "mask_rtdetr": "instaseg.models.mask_rtdetr",
    "ppyoloe_seg": "instaseg.models.ppyoloe_seg",
}


def architecture(name: str, source: str | None = None) -> Architecture:
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}", source, "model")
    return importlib.import_module(ARCHITECTURES[name]).ARCHITECTURE


def model_defaults(name: str) -> dict[str, Any]:
    return dict(architecture(name).model_defaults)


def _has_frozen_norm(model: Detector) -> bool:
    return any(type(m).__name__.startswith("FrozenBatchNorm") for m in model.modules())  # torchvision and timm


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
    return model


def build_model(recipe: dict | str, num_classes: int, weights: str | None = None) -> Detector:
    """A detector for `num_classes` foreground classes (labels 1..K, 0 is background).

    `weights`: "none" (random init), "imagenet" (pretrained backbone), "coco" (the recipe's torchvision COCO
    checkpoint, class layers re-initialised when K differs), a PATH (instaseg checkpoint or state_dict), or None
    for the recipe's `model.weights`.
    """
    from instaseg.models.recipes import load_recipe
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
