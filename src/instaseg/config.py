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
LR_SCHEDULES = ("plateau", "multistep", "cosine", "flat_cosine")
PRECISIONS = ("16-mixed", "bf16-mixed", "32-true")
RESIZE_RULES = ("keep_ratio", "stretch")
PHOTOMETRIC = (False, True, "jitter", "distort", "hsv")  # true is "jitter"
EMA_RAMPS = ("threshold", "exponential")

# Section defaults; the types here are the types validation expects (None: optional, any type).
DEFAULTS: dict[str, Any] = {
    "name": None,
    "task": "instance_segmentation",
    "description": "",
    # keep_ratio: shorter side to min_size unless the longer passes max_size (torchvision's rule); stretch: both
    # sides to max_size, the aspect ratio given up (PaddleDetection's keep_ratio: false), min_size == max_size
    "input": {"min_size": 800, "max_size": 1333, "resize": "keep_ratio"},
    "train": {
        "epochs": 12,
        "batch_size": 2,  # images per device and step
        "accumulate": 1,  # steps whose gradients add up before each optimizer step
        # The linear scaling rule: lr and warmup_iters are stated for base_batch images per optimizer step (the
        # published total batch); training sets lr x total / base_batch and warmup_iters x base_batch / total for the
        # actual total = devices x nodes x batch_size x accumulate (instaseg.engine.scaling). null: lr as given.
        "base_batch": 16,
        "lr": 0.02,  # SGD, for base_batch images per step
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "decay_norms_and_biases": None,  # null: SGD decays every weight, AdamW spares norms and biases; or true/false
        "lr_schedule": "plateau",  # plateau | multistep | cosine | flat_cosine: see instaseg.engine.schedules
        "milestones": [8, 11],  # multistep: epochs after which lr *= gamma
        "gamma": 0.1,
        "cosine_epochs": None,  # cosine: epochs the cosine spans (PaddleDetection's max_epochs); null: train.epochs
        "min_lr_ratio": 0.05,  # cosine / flat_cosine: final lr / lr
        "warmup_iters": 500,  # linear warmup, in optimizer steps of base_batch images
        "warmup_epochs": None,  # warmup in epochs instead (PaddleDetection's LinearWarmup epochs); null: warmup_iters
        "warmup_start": 0.001,  # lr factor the warmup starts from
        "plateau_patience": 2,  # plateau: epochs without improvement of val mask AP before lr *= plateau_factor
        "plateau_factor": 0.1,
        "ema": True,  # validate and save an exponential moving average of the weights
        "ema_decay": 0.9998,
        # how the decay ramps up over the first steps: threshold min(decay, (1 + n) / (10 + n)) (PaddleDetection's
        # default) | exponential decay x (1 - exp(-(n + 1) / 2000)) (mmdetection's ExpMomentumEMA, PaddleDetection's
        # ema_decay_type: exponential)
        "ema_ramp": "threshold",
        "early_stop_patience": 6,  # epochs without improvement before stopping; null: never
        "hflip": True,
        "scale_jitter": [0.8, 1.25],  # [lo, hi] scale factors, then cropped or padded to the recipe size; or null
        "multiscale": None,  # shorter sides drawn per image, ratio kept, max_size cap (mmdetection RandomChoiceResize)
        "batch_multiscale": None,  # square sides drawn per batch, stretched (PaddleDetection BatchRandomResize)
        "zoom_out": 0.0,  # probability of placing the image on a canvas up to zoom_out_max x larger (RandomExpand)
        "zoom_out_max": 4.0,
        "iou_crop": 0.0,  # probability of a crop overlapping some object by a random minimum IoU (SSD's RandomCrop)
        "photometric": True,  # false | true / jitter (colour jitter) | distort (PaddleDetection) | hsv (YOLOX)
        "photometric_prob": 0.8,  # share of the images the photometric change is applied to
        "copy_paste": False,
        "grad_clip": 10.0,  # max gradient norm, or null
        "max_nonfinite_steps": 5,  # steps in a row with a NaN/Inf loss or gradient (each skipped) before the run stops
        "backbone_lr_mult": 1.0,  # learning rate of the parameters under model.backbone, as a multiple of lr
        "sync_bn": False,  # BatchNorm statistics over every GPU's batch (SyncBatchNorm) in multi-GPU training
        "val_interval": 1,  # validate every this many epochs
        "num_workers": 2,
        "max_minutes": None,  # wall-clock training budget, or null
        "max_steps": None,  # optimizer-step training budget (Lightning's max_steps), or null: epochs alone
        "optimizer": "sgd",  # sgd | adamw; see instaseg.engine.schedules
        "mosaic": False,  # Mosaic (instaseg.data.mosaic), until mosaic_until of training
        "mixup": False,  # MixUp, likewise
        "mixup_prob": 0.5,  # share of the Mosaic results blended with another
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
    # the published config a recipe follows (a file of recipes/published/, `instaseg models NAME --published`) and
    # why it differs where it does: dotted recipe key (or a published setting without one) -> reason
    "published": {"config": None, "differences": {}},
}

_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_OPTIONAL = {
    ("train", key)
    for key in ("early_stop_patience", "scale_jitter", "grad_clip", "base_batch", "cosine_epochs", "warmup_epochs")
} | {("train", "multiscale"), ("train", "batch_multiscale")}
# keys whose values are checked by their own rule, not by the default's type
_OWN_RULE = {("train", "photometric"), ("train", "decay_norms_and_biases"), ("published", "differences")}


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
        if isinstance(reference[key], dict) and isinstance(value, dict) and (where, key) not in _OWN_RULE:
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
    if recipe["published"]["config"] is None:
        # the architecture's reasons are about its published configs, which a recipe naming none does not follow
        recipe["published"]["differences"] = {}
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
        if default is None or (value is None and (where, key) in _OPTIONAL) or (where, key) in _OWN_RULE:
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
    _check_input(recipe["input"], source)
    _check_train(recipe["train"], source)
    _check_resizes(recipe["input"]["resize"], recipe["train"], source)
    if not isinstance(recipe["published"]["differences"], dict):
        raise UserError("published.differences must map a key to the reason it differs", source)
    _check_tiling(recipe["tiling"], source)
    _check_types(recipe["model"], model_defaults, "model", source)


def _check_input(section: dict, source: str | None) -> None:
    if section["min_size"] > section["max_size"]:
        raise UserError("input.min_size must not exceed input.max_size", source, "input")
    if section["resize"] not in RESIZE_RULES:
        raise UserError(f"input.resize must be one of {', '.join(RESIZE_RULES)}", source, "input.resize")
    if section["resize"] == "stretch" and section["min_size"] != section["max_size"]:
        raise UserError("input.resize stretch makes squares: input.min_size must equal input.max_size", source, "input")


def _is_sizes(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and v >= 32 for v in value)


def _check_train(cfg: dict, source: str | None) -> None:
    """Value rules of the train section (types are checked against DEFAULTS)."""

    def bad(key: str, rule: str) -> UserError:
        return UserError(f"train.{key} {rule}, got {cfg[key]!r}", source, f"train.{key}")

    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS),
                         ("ema_ramp", EMA_RAMPS), ("photometric", PHOTOMETRIC)):  # fmt: skip
        if not any(cfg[key] is a or (type(cfg[key]) is type(a) and cfg[key] == a) for a in allowed):
            raise bad(key, f"must be one of {', '.join(map(str, allowed))}")
    for key in ("accumulate", "base_batch", "cosine_epochs"):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1):
            raise bad(key, "must be a positive whole number" + (" or null" if key != "accumulate" else ""))
    for key in ("backbone_lr_mult", "warmup_iters", "warmup_epochs"):
        if cfg[key] is not None and cfg[key] < 0:
            raise bad(key, "must not be negative")
    if not 0.0 < cfg["ema_decay"] < 1.0:
        raise bad("ema_decay", "must be in (0, 1)")
    for key in ("gamma", "min_lr_ratio", "warmup_start", "zoom_out", "iou_crop", "photometric_prob", "mixup_prob"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise bad(key, "must be in [0, 1]")
    if cfg["zoom_out_max"] < 1.0:
        raise bad("zoom_out_max", "must be at least 1")
    milestones = cfg["milestones"]
    if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in milestones) or sorted(
        milestones
    ) != list(milestones):
        raise bad("milestones", "must be increasing epochs")
    if cfg["decay_norms_and_biases"] not in (None, True, False):
        raise bad("decay_norms_and_biases", "must be true, false or null")
    jitter = cfg["scale_jitter"]
    if jitter is not None and not (isinstance(jitter, list) and len(jitter) == 2 and 0 < jitter[0] <= jitter[1]):
        raise bad("scale_jitter", "must be [lo, hi] with 0 < lo <= hi, or null")
    for key in ("multiscale", "batch_multiscale"):
        if cfg[key] is not None and not _is_sizes(cfg[key]):
            raise bad(key, "must be a list of sizes in pixels (each >= 32), or null")


def _check_resizes(rule: str, cfg: dict, source: str | None) -> None:
    """The training resizes fit the resize rule and one another."""
    if cfg["multiscale"] and rule != "keep_ratio":
        raise UserError("train.multiscale draws shorter sides: it needs input.resize keep_ratio", source, "train")
    if cfg["multiscale"] and cfg["scale_jitter"]:
        raise UserError("train.multiscale and train.scale_jitter both resize: set one, the other null", source, "train")
    if cfg["batch_multiscale"] and rule != "stretch":
        raise UserError("train.batch_multiscale stretches batches to squares: it needs input.resize stretch", source)


def _check_tiling(tiling: dict, source: str | None) -> None:
    size = tiling["size"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 32):
        why = f"tiling.size must be null or a whole number of pixels >= 32, got {size!r}"
        raise UserError(why, source, "tiling.size")
    for key, hi in (("overlap", 0.9), ("empty_tile_fraction", 1.0), ("merge_iou", 1.0)):
        if not 0.0 <= tiling[key] <= hi:
            raise UserError(f"tiling.{key} must be in [0, {hi}], got {tiling[key]!r}", source, f"tiling.{key}")


def rescaled_sizes(sizes: list[int], factor: float, multiple: int = 32) -> list[int]:
    """Multi-scale training sizes for an input ``factor`` times the one they were stated for (multiples of 32)."""
    return [max(multiple, round(s * factor / multiple) * multiple) for s in sizes]


def multiscale_overrides(recipe: dict, min_size: int) -> list[str]:
    """Overrides that move the recipe's multi-scale sizes along when its input.min_size becomes ``min_size``."""
    factor = min_size / recipe["input"]["min_size"]
    out = []
    for key in ("multiscale", "batch_multiscale"):
        sizes = recipe["train"][key]
        if sizes and factor != 1:
            out.append(f"train.{key}={rescaled_sizes(sizes, factor)}")
    return out


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
