"""Recipes, complete: the generic sections (`instaseg.config`) joined with the architecture's own defaults.

`load_recipe` gives a complete, validated recipe from a shipped name, a yaml path or a dict; `apply_overrides`
applies dotted KEY=VALUE overrides and validates again. Validation is the generic sections' types and rules,
then the model section's types (against its architecture's defaults) and the architecture's own value rules.
"""

from __future__ import annotations

import copy
from pathlib import Path

from instaseg.config import check_sections, complete_sections, list_recipes, read_recipe, set_overrides
from instaseg.errors import UserError
from instaseg.models.detector import Architecture
from instaseg.models.registry import architecture

__all__ = ["apply_overrides", "complete_recipe", "list_recipes", "load_recipe", "validate_recipe"]


def _architecture_of(model: object, source: str | None) -> Architecture:
    if not isinstance(model, dict) or "architecture" not in model:
        raise UserError("the recipe needs a model section with an architecture", source, "model")
    return architecture(model["architecture"], source)


def complete_recipe(data: dict, source: str | None = None) -> dict:
    """Defaults + the architecture's + the recipe's own keys, checked: unknown keys, wrong types and values raise
    a UserError naming the key."""
    arch = _architecture_of(data.get("model"), source)
    recipe = complete_sections(data, arch.model_defaults, arch.recipe_defaults, source)
    arch.validate(recipe["model"], source)
    return recipe


def validate_recipe(recipe: dict, source: str | None = None) -> None:
    """The checks `complete_recipe` makes, on a recipe that is already complete (e.g. after overrides)."""
    arch = _architecture_of(recipe.get("model"), source)
    check_sections(recipe, arch.model_defaults, source)
    arch.validate(recipe["model"], source)


def load_recipe(name_or_path: str | Path | dict) -> dict:
    """A complete, validated recipe from a shipped name (`maskrcnn_fast`), a yaml path, or a dict."""
    if isinstance(name_or_path, dict):
        return complete_recipe(copy.deepcopy(name_or_path))
    return complete_recipe(*read_recipe(name_or_path))


def apply_overrides(recipe: dict, overrides: list[str] | None) -> dict:
    """A copy of `recipe` with dotted KEY=VALUE overrides applied and the result validated."""
    out = set_overrides(recipe, overrides)
    validate_recipe(out, "overrides")
    return out
