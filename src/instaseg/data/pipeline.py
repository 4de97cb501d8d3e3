"""The sample pipeline a recipe asks for: the ordinary recipe transforms, or RTMDet's staged Mosaic/MixUp.

The choice lives here, above both, so that `instaseg.data.mosaic` (which builds its light stage from the recipe
transforms) and `instaseg.data.transforms` need not import each other.
"""

from __future__ import annotations

from typing import Any

from instaseg.data.mosaic import build_mosaic_pipeline
from instaseg.data.transforms import recipe_transforms


def build_transforms(recipe_input: dict, train_cfg: dict | None, train: bool, resize: bool = True) -> Any:
    """The sample pipeline for ``train_cfg`` (the recipe's ``train`` section, read only when ``train``): with
    ``mosaic`` or ``mixup`` the two-stage `StagedPipeline`, else `recipe_transforms` (see there for the keys)."""
    cfg = train_cfg or {}
    if train and (cfg.get("mosaic") or cfg.get("mixup")):
        return build_mosaic_pipeline(recipe_input, cfg)
    return recipe_transforms(recipe_input, cfg, train, resize)
