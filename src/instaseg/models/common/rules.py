"""Value rules that model sections share, written once: each architecture's ``validate`` composes them.

Types are checked before (against the architecture's defaults, `instaseg.config.check_sections`); these rules
check values. Each takes the complete model section and ``bad``, the error factory `key_error` makes, so every
message names the key and the value it got.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from instaseg.errors import UserError

Bad = Callable[[str, str], Exception]
# the names --weights and model.weights accept besides a file path
DOWNLOADS = ("imagenet", "coco")


def key_error(cfg: dict, source: str | None) -> Bad:
    """``bad(key, why)``: the UserError an architecture's ``validate`` raises for ``model.<key>`` of ``cfg``."""

    def bad(key: str, why: str) -> Exception:
        return UserError(f"model.{key} {why}, got {cfg[key]!r}", source, f"model.{key}")

    return bad


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_choice(cfg: dict, bad: Bad, key: str, choices: Iterable[Any], nullable: bool = False) -> None:
    """``cfg[key]`` is one of ``choices`` (or null when ``nullable``)."""
    choices = list(choices)
    if cfg[key] in choices or (nullable and cfg[key] is None):
        return
    raise bad(key, f"must be one of {', '.join(map(str, choices))}" + (" or null" if nullable else ""))


def check_positive(cfg: dict, bad: Bad, keys: Iterable[str], integer: bool = False, nullable: bool = False) -> None:
    """Each key is a positive number (a positive integer when ``integer``), or null when ``nullable``."""
    for key in keys:
        value = cfg[key]
        if nullable and value is None:
            continue
        if not (is_positive_int(value) if integer else is_number(value) and value > 0):
            kind = "integer" if integer else "number"
            raise bad(key, f"must be a positive {kind}" + (" or null" if nullable else ""))


def check_non_negative(cfg: dict, bad: Bad, keys: Iterable[str]) -> None:
    for key in keys:
        if not is_number(cfg[key]) or cfg[key] < 0:
            raise bad(key, "must not be negative")


def check_fraction(
    cfg: dict, bad: Bad, keys: Iterable[str], closed_low: bool = False, closed_high: bool = True
) -> None:
    """Each key is in (0, 1] by default; ``closed_low`` admits 0, ``closed_high=False`` refuses 1."""
    for key in keys:
        value = cfg[key]
        low_ok = value >= 0 if closed_low else value > 0
        high_ok = value <= 1 if closed_high else value < 1
        if not (is_number(value) and low_ok and high_ok):
            raise bad(key, f"must be in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}")


def check_positive_ints(cfg: dict, bad: Bad, except_keys: Iterable[str] = ("frozen_stages",)) -> None:
    """Every integer of the section is positive (sizes, counts), but the ``except_keys``."""
    skip = set(except_keys)
    for key, value in cfg.items():
        if key not in skip and isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise bad(key, "must be positive")


def check_frozen_stages(cfg: dict, bad: Bad, stages: int = 4) -> None:
    """-1 (nothing frozen), 0 (the stem) up to every one of the backbone's ``stages``."""
    if not -1 <= cfg["frozen_stages"] <= stages:
        raise bad("frozen_stages", f"must be -1 (nothing frozen) to {stages}")


def check_fpn_levels(cfg: dict, bad: Bad) -> None:
    """``levels``: increasing backbone stage numbers among C2..C5 (strides 4..32)."""
    levels = cfg["levels"]
    if not levels or sorted(set(levels)) != levels or not set(levels) <= {2, 3, 4, 5}:
        raise bad("levels", "must be increasing stage numbers among 2, 3, 4, 5")


def check_weights(cfg: dict, bad: Bad, downloads: Iterable[str], name: str) -> None:
    """``weights`` is none, a path, or one of the ``downloads`` this architecture can fetch."""
    downloads = tuple(downloads)
    value = cfg["weights"]
    if not isinstance(value, str) or not value:
        raise bad("weights", f"must be {', '.join(('none', *downloads))} or a checkpoint path")
    if value.lower() in DOWNLOADS and value.lower() not in downloads:
        allowed = ", ".join(("none", *downloads, "a checkpoint PATH"))
        raise bad("weights", f"has no published {value.lower()} download for {name} here; use {allowed}")


def no_pretrained_weights(family: str) -> Exception:
    """The error of a from-scratch family asked for ImageNet weights that nobody publishes in a form we load."""
    why = f"no ImageNet-pretrained {family} weights are available; use --weights none or a PATH"
    return UserError(why, record="weights")


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
