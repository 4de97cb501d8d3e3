"""Dataset-aware training defaults: from the training split's statistics to the recipe keys a practitioner sets.

A shipped recipe is shaped for some data (the fast recipes for the demo's 30-100 px shapes at 256 px); this
module reads the training annotations (`instaseg.data.statistics`) and chooses, in order:

1. the input size and tiling. Objects whose median size at the network input is under SMALL_OBJECT_PX are hard
   for every detector (a few feature-map cells). The input grows (up to MAX_INPUT_GROWTH x the recipe's) until
   they are not; when that is not enough and the images are at least two tiles across, the images are tiled
   (tile side from the objects' mean area, overlap from the largest object, `instaseg.data.statistics`) and
   each tile is resized to the recipe's input.
2. anchors, for architectures that name their anchor keys (`Architecture.anchor_keys`): fitted to the boxes at
   the scale the network sees them, with the coverage (anchor recall at IoU 0.5) before and after. A model
   starting from detection weights keeps its anchor count, so its RPN head still loads.
3. detections per image and COCO maxDets (both ``eval.max_dets``): at least the busiest image's instance count,
   and the architecture's candidate counts (`Architecture.candidate_keys`) raised to match.

Keys given on the command line win over every choice. The choices and the statistics are written to the
recipe's ``auto`` section (config.yaml, checkpoints); ``auto.enabled: false`` (``--auto off``) keeps the recipe.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from instaseg.config import multiscale_overrides
from instaseg.data.statistics import (
    COVERAGE_TARGET,
    DatasetStatistics,
    anchor_coverage,
    anchor_shapes,
    fit_anchors,
    tile_overlap_for,
    tile_size_for,
)
from instaseg.data.transforms import resize_scale
from instaseg.models.recipes import apply_overrides
from instaseg.models.registry import architecture
from instaseg.utils.text_table import format_table

SMALL_OBJECT_PX = 16  # median object side at the network input below which the input grows or the image is tiled
MAX_INPUT_GROWTH = 2.0  # the input may grow to this multiple of the recipe's (time and memory grow with its square)
MIN_TILES_ACROSS = 2.0  # images whose long side spans fewer tiles than this are not tiled
DETECTION_MARGIN = 1.1  # detections per image: the busiest image's count plus this margin, rounded up to tens


@dataclass
class Choice:
    """One recipe key: its value in the recipe, the value training uses, and why."""

    key: str
    recipe: Any
    chosen: Any
    why: str


def auto_configure(
    recipe: dict, stats: DatasetStatistics, explicit: set[str] | frozenset = frozenset(), weights: str | None = None
) -> dict:
    """``recipe`` with dataset-aware values (validated), its ``auto`` section recording statistics and choices.

    ``explicit``: dotted keys the user set on the command line; they keep their values. ``weights``: what the
    model starts from when it is not the recipe's ``model.weights`` (detection weights fix the anchor count).
    """
    choices = _choose_input_and_tiling(recipe, stats, explicit)
    values = {c.key: c.chosen for c in choices}
    scaled = box_wh_at_input(stats, recipe, values)
    arch = architecture(recipe["model"]["architecture"])
    if arch.anchor_keys:
        start = str(weights if weights is not None else recipe["model"].get("weights", "none")).lower()
        choices += _choose_anchors(recipe, scaled, arch.anchor_keys, explicit, start not in ("none", "imagenet"))
    choices += _choose_detections(recipe, stats, arch.candidate_keys, explicit)
    overrides = [f"{c.key}={json.dumps(c.chosen)}" for c in choices if c.chosen != c.recipe]
    out = apply_overrides(recipe, overrides)
    out["auto"] = {
        "enabled": True,
        "statistics": stats.summary(),
        "choices": [_plain(asdict(c)) for c in choices],
    }
    return out


def _pick(key: str, recipe_value: Any, chosen: Any, why: str, explicit: set[str] | frozenset) -> Choice:
    if key in explicit:
        return Choice(key, recipe_value, recipe_value, "set on the command line")
    return Choice(key, recipe_value, chosen, why)


def _get(recipe: dict, key: str) -> Any:
    section, name = key.split(".", 1)
    return recipe[section][name]


def _input_scales(image_hw: np.ndarray, min_size: float, max_size: float, keep_ratio: bool) -> np.ndarray:
    """[N,2] (x, y) scale of each image (h, w) by the recipe resize; a stretched image's axes scale apart."""
    if not keep_ratio:
        hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
        return np.stack([max_size / hw[:, 1], max_size / hw[:, 0]], axis=1)
    scale = np.array([resize_scale(h, w, min_size, max_size) for h, w in image_hw], dtype=np.float64)
    return np.repeat(scale.reshape(-1, 1), 2, axis=1)


def _median_object_at_input(stats: DatasetStatistics, min_size: float, max_size: float, keep_ratio: bool) -> float:
    if stats.num_boxes == 0:
        return math.inf
    scaled = stats.box_wh * _input_scales(stats.image_hw, min_size, max_size, keep_ratio)[stats.box_image]
    return float(np.median(np.sqrt(scaled.prod(axis=1))))


def _choose_input_and_tiling(recipe: dict, stats: DatasetStatistics, explicit: set[str] | frozenset) -> list[Choice]:
    lo, hi = int(recipe["input"]["min_size"]), int(recipe["input"]["max_size"])
    median = _median_object_at_input(stats, lo, hi, recipe["input"]["resize"] == "keep_ratio")
    growth, tile, overlap = 1.0, recipe["tiling"]["size"], recipe["tiling"]["overlap"]
    why_input = why_tile = f"median object {median:.0f} px at the input: large enough"
    if median < SMALL_OBJECT_PX:
        growth = min(MAX_INPUT_GROWTH, SMALL_OBJECT_PX / max(median, 1e-3))
        why_input = f"median object {median:.1f} px at the input: input x{growth:.2f}"
        why_tile = "not needed: a larger input suffices"
    if median * growth < SMALL_OBJECT_PX and stats.num_boxes:
        side = tile_size_for(float(stats.box_wh.prod(axis=1).mean()), lo // 2, 2 * lo)
        why_tile = f"images under {MIN_TILES_ACROSS:g} tiles of {side} px across: not tiled"
        if np.median(stats.image_hw.max(axis=1)) >= MIN_TILES_ACROSS * side:
            growth = 1.0  # each tile is resized to the recipe's input: no growth on top
            tile, overlap = side, tile_overlap_for(float(np.percentile(stats.box_wh.max(axis=1), 99)), side)
            why_input = "kept: the images are tiled"
            why_tile = f"median object {median:.1f} px even at x{MAX_INPUT_GROWTH:g} input: {side} px tiles -> {lo} px"
    new_lo, new_hi = (_multiple_of_32(v * growth) if growth > 1 else v for v in (lo, hi))
    scaled = []
    for item in multiscale_overrides(recipe, new_lo):  # the multi-scale sizes move with the input
        key, value = item.split("=", 1)
        scaled.append(_pick(key, recipe["train"][key.split(".")[1]], json.loads(value), why_input, explicit))
    return scaled + [
        _pick("input.min_size", lo, new_lo, why_input, explicit),
        _pick("input.max_size", hi, new_hi, why_input, explicit),
        _pick("tiling.size", recipe["tiling"]["size"], tile, why_tile, explicit),
        _pick("tiling.overlap", recipe["tiling"]["overlap"], overlap, "largest objects whole in some tile", explicit),
    ]


def _multiple_of_32(value: float) -> int:
    return int(math.ceil(value / 32) * 32)


def box_wh_at_input(stats: DatasetStatistics, recipe: dict, values: dict[str, Any] | None = None) -> np.ndarray:
    """Box (w, h) as the network sees them: each image (or tile) resized by the recipe's rule (or by ``values``,
    dotted keys that replace the recipe's input.min_size, input.max_size and tiling.size)."""
    values = values or {}
    lo = values.get("input.min_size", recipe["input"]["min_size"])
    hi = values.get("input.max_size", recipe["input"]["max_size"])
    tile = values.get("tiling.size", recipe["tiling"]["size"])
    keep = recipe["input"]["resize"] == "keep_ratio"
    image_hw = np.full((len(stats.image_hw), 2), tile) if tile else stats.image_hw
    scales = _input_scales(image_hw, lo, hi, keep)
    return stats.box_wh * scales[stats.box_image] if stats.num_boxes else stats.box_wh


def _choose_anchors(
    recipe: dict, box_wh: np.ndarray, keys: tuple[str, str], explicit: set[str] | frozenset, detection_weights: bool
) -> list[Choice]:
    size_key, ratio_key = (f"model.{k}" for k in keys)
    sizes, ratios = recipe["model"][keys[0]], recipe["model"][keys[1]]
    if {size_key, ratio_key} & set(explicit):
        kept = anchor_coverage(box_wh, anchor_shapes(sizes, ratios))
        why = f"set on the command line; covers {kept:.1%} of boxes"
        return [Choice(size_key, sizes, sizes, why), Choice(ratio_key, ratios, ratios, why)]
    kept = anchor_coverage(box_wh, anchor_shapes(sizes, ratios))
    if kept >= COVERAGE_TARGET:  # anchors that already fit the data are left as the recipe tuned them
        why = f"the recipe's anchors cover {kept:.1%} of boxes (IoU >= 0.5): kept"
        return [Choice(size_key, sizes, sizes, why), Choice(ratio_key, ratios, ratios, why)]
    # detection weights carry an RPN head sized for the recipe's anchor count: keep that count
    per_level = max(len(level) for level in sizes)
    if detection_weights:
        fit = fit_anchors(box_wh, sizes, ratios, max_per_level=per_level, max_ratios=len(ratios))
    else:
        fit = fit_anchors(box_wh, sizes, ratios)
    why = f"k-means on box sizes: anchor coverage (IoU >= 0.5) {fit.coverage_before:.1%} -> {fit.coverage_after:.1%}"
    return [Choice(size_key, sizes, fit.sizes_per_level, why), Choice(ratio_key, ratios, fit.aspect_ratios, why)]


def _choose_detections(
    recipe: dict, stats: DatasetStatistics, candidates: dict[str, float], explicit: set[str] | frozenset
) -> list[Choice]:
    busiest = int(stats.per_image.max()) if len(stats.per_image) else 0
    current = int(recipe["eval"]["max_dets"])
    needed = int(math.ceil(busiest * DETECTION_MARGIN / 10) * 10)
    chosen = max(current, needed)
    why = f"busiest training image holds {busiest} instances"
    out = [_pick("eval.max_dets", current, chosen, why + " (detections per image and COCO maxDets)", explicit)]
    dets = out[0].chosen
    if dets == current:  # the recipe's candidate counts were tuned for its own detections per image
        return out
    for key, factor in candidates.items():
        value = int(recipe["model"][key])
        least = int(math.ceil(dets * factor))
        out.append(_pick(f"model.{key}", value, max(value, least), f"at least {factor:g} x {dets}", explicit))
    return out


def _plain(value: Any) -> Any:
    """Json/yaml-safe copy (numpy numbers to Python ones)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def choice_rows(recipe: dict) -> list[dict]:
    """The ``auto`` section's choices as rows to show: ``key``, ``recipe`` and ``chosen`` values as text, ``why``,
    and ``changed`` (the chosen value differs from the recipe's)."""
    return [
        {
            "key": c["key"],
            "recipe": _short(c["recipe"]),
            "chosen": _short(c["chosen"]),
            "why": c["why"],
            "changed": c["recipe"] != c["chosen"],
        }
        for c in (recipe.get("auto") or {}).get("choices") or []
    ]


def render_choices(recipe: dict) -> str:
    """The choices as a plain-text table (recipe value, chosen value, why) for logs and train.log."""
    rows = [(r["key"], r["recipe"], r["chosen"], r["why"]) for r in choice_rows(recipe)]
    return format_table(("key", "recipe", "chosen", "why"), rows, title="dataset-aware configuration")


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
