"""Recipes, the generic part: the sections every recipe has, yaml reading, dotted overrides, type checks.

A recipe yaml states what differs from the defaults below and from its architecture's own defaults (its model
section, and the input/train/eval values of its published recipe); a loaded recipe is always complete, so every
key can be overridden and `instaseg models NAME` shows all of it. There is no inheritance between recipe files:
defaults, then the architecture's, then the file. Completing a recipe needs its architecture, so loading lives
one layer up, in `instaseg.models.recipes`, which calls `read_recipe` and then `complete_sections` (merged and
checked in that one call); this module imports nothing of the models.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from instaseg.errors import UserError

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
TASKS = ("instance_segmentation",)
# every name a recipe may give these keys: the engine builds exactly these (instaseg.engine.schedules)
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("plateau", "flat_cosine")
PRECISIONS = ("16-mixed", "bf16-mixed", "32-true")

# Section defaults; the types here are the types validation expects (None: optional, any type).
DEFAULTS: dict[str, Any] = {
    "name": None,
    "task": "instance_segmentation",
    "description": "",
    "input": {"min_size": 800, "max_size": 1333},
    "train": {
        "epochs": 12,
        "batch_size": 2,
        "lr": 0.0025,  # SGD; the linear-scaling rule's 0.02 for 16 images, at 2 images per step
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "warmup_iters": 500,
        "plateau_patience": 2,  # epochs without improvement of val mask AP before lr *= plateau_factor
        "plateau_factor": 0.1,
        "ema": True,  # validate and save an exponential moving average of the weights
        "ema_decay": 0.9998,
        "early_stop_patience": 6,  # epochs without improvement before stopping; null: never
        "hflip": True,
        "scale_jitter": [0.8, 1.25],  # [lo, hi] scale factors, or null
        "photometric": True,
        "copy_paste": False,
        "grad_clip": 10.0,  # max gradient norm, or null
        "max_nonfinite_steps": 5,  # steps in a row with a NaN/Inf loss or gradient (each skipped) before the run stops
        "backbone_lr_mult": 1.0,  # learning rate of the parameters under model.backbone, as a multiple of lr
        "val_interval": 1,  # validate every this many epochs
        "num_workers": 2,
        "max_minutes": None,  # wall-clock training budget, or null
        "max_steps": None,  # optimizer-step training budget (Lightning's max_steps), or null: epochs alone
        "optimizer": "sgd",  # sgd | adamw (no decay on norms and biases); see instaseg.engine.schedules
        "lr_schedule": "plateau",  # plateau (warmup, then x plateau_factor on stalls) | flat_cosine (RTMDet's)
        "min_lr_ratio": 0.05,  # flat_cosine: final lr / lr
        "mosaic": False,  # Mosaic (instaseg.data.mosaic), until mosaic_until of training
        "mixup": False,  # MixUp, likewise
        "mosaic_until": 0.93,  # fraction of training (epochs or time budget) after which Mosaic/MixUp stop
        "seed": 0,  # seeds torch, numpy and Python in every process and data worker
        "precision": "16-mixed",  # on a GPU: 16-mixed | bf16-mixed | 32-true; CPUs always train in 32-true
    },
    # analyze: after training, `instaseg eval --analyze` of best.ckpt on the val split into the run folder
    "eval": {"max_dets": 100, "score_threshold": 0.05, "analyze": True},
    # tiles for objects small against the image: training on tiles, prediction on tiles plus the whole image
    "tiling": {
        "size": None,  # tile side in image pixels, or null: no tiling
        "overlap": 0.2,  # share of the tile shared with its neighbour
        "full_image_pass": True,  # prediction also runs on the whole image, for objects larger than a tile
        "empty_tile_fraction": 0.1,  # training: share of the tiles without objects that are kept
        "merge_iou": 0.5,  # prediction: same-class instances overlapping this much (mask IoU) are one
    },
    # the dataset-aware choices `instaseg train` makes (`instaseg.engine.auto_config`), recorded with the run
    "auto": {"enabled": True, "statistics": None, "choices": None},
}

_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_OPTIONAL = {("train", "early_stop_patience"), ("train", "scale_jitter"), ("train", "grad_clip")}


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"malformed yaml: {e}".replace("\n", " "), path) from None
    except OSError as e:
        raise UserError(f"cannot read recipe: {e}", path) from None
    if not isinstance(data, dict):
        raise UserError("a recipe is a yaml mapping (name, task, model, input, train, eval)", path)
    return data


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_known(data: dict, reference: dict, where: str, source: str | None) -> None:
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in reference:
            known = ", ".join(sorted(map(str, reference)))
            raise UserError(f"unknown recipe key {path!r} (known here: {known})", source, path)
        if isinstance(reference[key], dict) and isinstance(value, dict):
            _check_known(value, reference[key], path, source)


def read_recipe_file(path: Path) -> dict:
    """A recipe yaml as written (named after its file unless it says otherwise)."""
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    return data


def recipe_file(name_or_path: str | Path) -> Path:
    """The yaml of a shipped recipe name (`maskrcnn_fast`) or a path; a UserError names what is missing."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError("recipe file not found", path)
        return path
    if text not in list_recipes():
        raise UserError(f"unknown recipe {text!r}; known: {', '.join(list_recipes())} (or give a yaml path)")
    return RECIPE_DIR / f"{text}.yaml"


def read_recipe(name_or_path: str | Path) -> tuple[dict, str]:
    """(the recipe as written, the source its errors name: a shipped recipe by its name, a file by its path)."""
    path = recipe_file(name_or_path)
    source = path.stem if path.resolve().parent == RECIPE_DIR else str(path)
    return read_recipe_file(path), source


def complete_sections(data: dict, model_defaults: dict, recipe_defaults: dict, source: str | None) -> dict:
    """Defaults, then the architecture's (``model_defaults`` for the model section, ``recipe_defaults`` for the
    others), then the recipe's own keys, checked by `check_sections`; unknown keys raise a UserError. The model
    section's value rules are its architecture's, applied by the caller."""
    # key order of the complete recipe (as `instaseg models NAME` prints it): what it is, the model, then the rest
    reference = {k: DEFAULTS[k] for k in ("name", "task", "description")} | {"model": model_defaults} | DEFAULTS
    _check_known(data, reference, "", source)
    _check_known(recipe_defaults, reference, "", "architecture defaults")
    recipe = _deep_merge(_deep_merge(reference, recipe_defaults), data)
    check_sections(recipe, model_defaults, source)
    return recipe


def _expected_type(default: Any) -> tuple[type, ...]:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, int):
        return (int,)
    return (type(default),)


def _check_types(recipe: dict, reference: dict, where: str, source: str | None) -> None:
    for key, default in reference.items():
        path = f"{where}.{key}" if where else key
        value = recipe.get(key)
        if default is None or (value is None and (where, key) in _OPTIONAL):
            continue
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise UserError(f"{path} must be a mapping", source, path)
            _check_types(value, default, path, source)
            continue
        types = _expected_type(default)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise UserError(f"{path} must be {names}, got {value!r}", source, path)


def _check_positive(recipe: dict, keys: list[str], source: str | None) -> None:
    for dotted in keys:
        section, key = dotted.split(".")
        value = recipe[section][key]
        if value is not None and value <= 0:
            raise UserError(f"{dotted} must be positive, got {value!r}", source, dotted)


def check_sections(recipe: dict, model_defaults: dict, source: str | None = None) -> None:
    """Types against the defaults (the model section's against ``model_defaults``), then the value rules of the
    sections every recipe has; raises a UserError naming the key. The model's value rules are its own."""
    _check_types(recipe, {k: v for k, v in DEFAULTS.items() if k != "name"}, "", source)
    if not isinstance(recipe.get("name"), str) or not recipe["name"]:
        raise UserError("the recipe needs a name", source, "name")
    if recipe["task"] not in TASKS:
        raise UserError(f"unknown task {recipe['task']!r}; known: {', '.join(TASKS)}", source, "task")
    _check_positive(
        recipe,
        ["input.min_size", "input.max_size", "train.epochs", "train.batch_size", "train.lr", "eval.max_dets"],
        source,
    )
    if recipe["input"]["min_size"] > recipe["input"]["max_size"]:
        raise UserError("input.min_size must not exceed input.max_size", source, "input")
    if recipe["train"]["backbone_lr_mult"] < 0:
        raise UserError("train.backbone_lr_mult must not be negative", source, "train.backbone_lr_mult")
    if not 0.0 < recipe["train"]["ema_decay"] < 1.0:
        raise UserError("train.ema_decay must be in (0, 1)", source, "train.ema_decay")
    jitter = recipe["train"]["scale_jitter"]
    if jitter is not None and not (isinstance(jitter, list) and len(jitter) == 2 and 0 < jitter[0] <= jitter[1]):
        raise UserError(f"train.scale_jitter must be [lo, hi] with 0 < lo <= hi, or null; got {jitter!r}", source)
    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS)):
        if recipe["train"][key] not in allowed:
            raise UserError(f"train.{key} must be one of {', '.join(allowed)}", source, f"train.{key}")
    _check_tiling(recipe["tiling"], source)
    _check_types(recipe["model"], model_defaults, "model", source)


def _check_tiling(tiling: dict, source: str | None) -> None:
    size = tiling["size"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 32):
        why = f"tiling.size must be null or a whole number of pixels >= 32, got {size!r}"
        raise UserError(why, source, "tiling.size")
    for key, hi in (("overlap", 0.9), ("empty_tile_fraction", 1.0), ("merge_iou", 1.0)):
        if not 0.0 <= tiling[key] <= hi:
            raise UserError(f"tiling.{key} must be in [0, {hi}], got {tiling[key]!r}", source, f"tiling.{key}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); the value is read as yaml (numbers, booleans, lists, null)."""
    if "=" not in item:
        raise UserError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string; users mean a number
    return key.strip().split("."), value


def set_overrides(recipe: dict, overrides: list[str] | None) -> dict:
    """A copy of `recipe` with dotted KEY=VALUE overrides applied (not validated: see models.recipes)."""
    out = copy.deepcopy(recipe)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = out
        for i, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[: i + 1])
                raise UserError(f"unknown recipe key {where!r} in override {item!r}", record=where)
            if i == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return out


def recipe_to_yaml(recipe: dict) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
