"""The sample pipeline a recipe asks for: resize and augmentations, or RTMDet's staged Mosaic/MixUp on top.

The choice lives here, above `instaseg.data.transforms`, `instaseg.data.augment` and `instaseg.data.mosaic`, so
that those need not import each other. A training pipeline is, in order: the geometry (zoom-out and minimum-IoU
crop then resize, as PaddleDetection's readers; or a shorter side drawn per image; or the recipe resize with scale
jitter), copy-paste, flip, and the colour change (first instead, when the image is zoomed out or cropped: as
PaddleDetection distorts the picture before it expands the canvas, so the fill stays the mean pixel).
"""

from __future__ import annotations

from typing import Any

from torchvision.transforms import v2

from instaseg.data.augment import BatchMultiScale, MultiScaleResize, ZoomOutCropResize, photometric
from instaseg.data.dataset import collate_fn
from instaseg.data.mosaic import build_mosaic_pipeline
from instaseg.data.transforms import CopyPaste, ResizeToRecipe


def keeps_ratio(recipe_input: dict) -> bool:
    return recipe_input.get("resize", "keep_ratio") == "keep_ratio"


def recipe_transforms(recipe_input: dict, train_cfg: dict | None, train: bool, resize: bool = True) -> v2.Compose:
    """The ordinary sample pipeline of a recipe (Mosaic and MixUp aside).

    ``recipe_input``: ``{min_size, max_size, resize}``. ``train_cfg`` (the recipe's ``train`` section) is read only
    when ``train``: ``zoom_out``, ``zoom_out_max``, ``iou_crop``, ``multiscale``, ``scale_jitter``, ``copy_paste``,
    ``hflip``, ``photometric`` and ``photometric_prob``. Evaluation pipelines resize to the recipe size, or with
    ``resize=False`` keep the original resolution (the model then resizes itself and pastes predictions back).
    """
    min_size, max_size = int(recipe_input["min_size"]), int(recipe_input["max_size"])
    keep = keeps_ratio(recipe_input)
    cfg = train_cfg or {}
    steps: list[Any] = []
    if not train:
        steps += [ResizeToRecipe(min_size, max_size, keep_ratio=keep)] if resize else []
        return v2.Compose([*steps, v2.SanitizeBoundingBoxes(min_size=1)])
    colour = photometric(cfg.get("photometric", False), float(cfg.get("photometric_prob", 0.8)))
    zoom, crop = float(cfg.get("zoom_out", 0.0)), float(cfg.get("iou_crop", 0.0))
    if zoom or crop:
        steps += [colour] if colour is not None else []
        colour = None
        steps.append(ZoomOutCropResize(min_size, max_size, keep, zoom, float(cfg.get("zoom_out_max", 4.0)), crop))
        if cfg.get("scale_jitter"):
            steps.append(ResizeToRecipe(min_size, max_size, cfg["scale_jitter"], keep))
    elif cfg.get("multiscale"):
        steps.append(MultiScaleResize(cfg["multiscale"], max_size))
    else:
        steps.append(ResizeToRecipe(min_size, max_size, cfg.get("scale_jitter"), keep))
    if cfg.get("copy_paste"):
        steps.append(CopyPaste())
    if cfg.get("hflip", True):
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [colour] if colour is not None else []
    steps.append(v2.SanitizeBoundingBoxes(min_size=1))
    return v2.Compose(steps)


def build_transforms(recipe_input: dict, train_cfg: dict | None, train: bool, resize: bool = True) -> Any:
    """The sample pipeline for ``train_cfg`` (the recipe's ``train`` section, read only when ``train``): with
    ``mosaic`` or ``mixup`` the two-stage `StagedPipeline` (whose light stage is `recipe_transforms`), else
    `recipe_transforms` (see there for the keys)."""
    cfg = train_cfg or {}
    if train and (cfg.get("mosaic") or cfg.get("mixup")):
        return build_mosaic_pipeline(recipe_input, cfg, light=recipe_transforms(recipe_input, cfg, train=True))
    return recipe_transforms(recipe_input, cfg, train, resize)


def train_collate(train_cfg: dict) -> Any:
    """The training loader's collate function: the plain one, or `BatchMultiScale` for ``batch_multiscale``."""
    sizes = train_cfg.get("batch_multiscale")
    return BatchMultiScale(sizes, collate_fn) if sizes else collate_fn
