"""The published configs recipes follow, and a recipe beside its config, difference by difference.

`recipes/published/*.yaml` hold each published training config (PaddleDetection's, mmdetection's) as the values of
instaseg's recipe keys, plus the settings no recipe key holds. A recipe names its config in ``published.config``
and says why it differs wherever it does in ``published.differences`` (dotted key or setting name -> reason; the
architecture's recipe defaults give the reasons its recipes share). `compare` lines the two up for
`instaseg models NAME --published`; a difference without a reason shows as unexplained.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from instaseg.config import RECIPE_DIR
from instaseg.errors import UserError

PUBLISHED_DIR = RECIPE_DIR / "published"
SAME, DIFFERS, UNEXPLAINED = "same", "differs", "unexplained"


@cache
def _sources() -> dict[str, dict[str, Any]]:
    """Every published config by name: its source file's repository and commit joined to the config's entry."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(PUBLISHED_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, entry in data["configs"].items():
            out[name] = {
                "name": name,
                "repository": data["repository"],
                "commit": str(data["commit"]),
                "path": entry["path"],
                "result": entry.get("result", ""),
                "values": dict(entry["values"]),
                "settings": dict(entry.get("settings") or {}),
                "file": Path(path).name,
            }
    return out


def published_names() -> list[str]:
    return sorted(_sources())


def published_config(name: str) -> dict[str, Any]:
    """One published config: repository, commit, path, result, values (dotted recipe keys), settings."""
    try:
        return _sources()[name]
    except KeyError:
        raise UserError(f"unknown published config {name!r}; known: {', '.join(published_names())}") from None


def recipe_value(recipe: dict, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return recipe[section][key]


def same_value(a: Any, b: Any) -> bool:
    """Equal, numbers within float rounding (1/3 written as 0.3333...), lists element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare(recipe: dict) -> dict[str, Any]:
    """The recipe beside its published config: ``{"config": the config (as `published_config`), "rows": [...]}``,
    one row per published value and per published setting: ``key``, ``published``, ``recipe`` (None for a setting
    no recipe key holds), ``status`` (same | differs | unexplained) and ``why`` (the recipe's reason)."""
    section = recipe.get("published") or {}
    if not section.get("config"):
        raise UserError(f"recipe {recipe.get('name')!r} follows no published config (published.config is null)")
    config = published_config(section["config"])
    reasons = section.get("differences") or {}
    rows = []
    for key, published in config["values"].items():
        ours = recipe_value(recipe, key)
        status = SAME if same_value(ours, published) else DIFFERS if key in reasons else UNEXPLAINED
        rows.append({"key": key, "published": published, "recipe": ours, "status": status, "why": reasons.get(key)})
    for key, published in config["settings"].items():
        status = DIFFERS if key in reasons else UNEXPLAINED
        rows.append({"key": key, "published": published, "recipe": None, "status": status, "why": reasons.get(key)})
    return {"config": config, "rows": rows}
