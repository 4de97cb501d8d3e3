"""Recipes, complete: the generic sections (`instaseg.config`) joined with the architecture's own defaults.

`load_recipe` gives a complete, validated recipe from a shipped name, a yaml path or a dict; `apply_overrides`
applies dotted KEY=VALUE overrides and validates again. Validation is the generic sections' types and rules,
then the model section's types (against its architecture's defaults) and the architecture's own value rules.
"""

from __future__ import annotations

import copy
from pathlib import Path

from instaseg.config import (
    RECIPE_DIR,
    complete_sections,
    list_recipes,
    read_recipe_file,
    recipe_file,
    set_overrides,
    validate_sections,
)
from instaseg.errors import UserError
from instaseg.models.registry import architecture

__all__ = ["apply_overrides", "complete_recipe", "list_recipes", "load_recipe", "validate_recipe"]


def _architecture_of(model: object, source: str | None):
    if not isinstance(model, dict) or "architecture" not in model:
        raise UserError("the recipe needs a model section with an architecture", source, "model")
    return architecture(model["architecture"], source)


def complete_recipe(data: dict, source: str | None = None) -> dict:
    """Defaults + the architecture's + the recipe's own keys, checked: unknown keys, wrong types and values raise
    a UserError naming the key."""
    arch = _architecture_of(data.get("model"), source)
    recipe = complete_sections(data, arch.model_defaults, arch.recipe_defaults, source)
    validate_recipe(recipe, source)
    return recipe


def validate_recipe(recipe: dict, source: str | None = None) -> None:
    arch = _architecture_of(recipe.get("model"), source)
    validate_sections(recipe, arch.model_defaults, source)
    arch.validate(recipe["model"], source)


def load_recipe(name_or_path: str | Path | dict) -> dict:
    """A complete, validated recipe from a shipped name (`maskrcnn_fast`), a yaml path, or a dict."""
    if isinstance(name_or_path, dict):
        return complete_recipe(copy.deepcopy(name_or_path))
    path = recipe_file(name_or_path)
    source = path.stem if path.resolve().parent == RECIPE_DIR else str(path)  # a shipped recipe by its name
    return complete_recipe(read_recipe_file(path), source)


def apply_overrides(recipe: dict, overrides: list[str] | None) -> dict:
    """A copy of `recipe` with dotted KEY=VALUE overrides applied and the result validated."""
    out = set_overrides(recipe, overrides)
    validate_recipe(out, "overrides")
    return out


def inference_settings(recipe: dict, cfg: dict | None = None) -> dict:
    """What a one-stage detector's inference keeps: the recipe's score cut and detections per image, and where the
    model section has them, its candidates before NMS (``nms_pre``) and NMS IoU."""
    settings = {
        "score_threshold": float(recipe["eval"]["score_threshold"]),
        "max_dets": int(recipe["eval"]["max_dets"]),
    }
    if cfg is not None:
        settings.update(nms_pre=int(cfg["nms_pre"]), nms_iou=float(cfg["nms_iou"]))
    return settings
