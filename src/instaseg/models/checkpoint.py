"""Checkpoints: weights + recipe + class names + input size, so a model needs nothing else to be rebuilt.

A checkpoint is a dict with key "instaseg": {"recipe", "class_names", "category_ids", "input", "model_state_dict",
"version"}. Lightning's .ckpt files carry the same key (added in the LightningModule's on_save_checkpoint), so
`load_checkpoint` reads both. Files are read with torch.load(weights_only=True): tensors and plain containers only.
Rebuilding the model a checkpoint describes is `instaseg.models.factory.model_from_checkpoint`.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.errors import UserError
from instaseg.utils.io import atomic_write_bytes
from instaseg.version import __version__

REQUIRED_KEYS = ("recipe", "class_names", "category_ids", "model_state_dict")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def input_section(recipe: dict) -> dict:
    """The input a checkpoint records: sizes and resize rule (a checkpoint from before the rule keeps the ratio)."""
    section = recipe["input"]
    return {
        "min_size": int(section["min_size"]),
        "max_size": int(section["max_size"]),
        "resize": str(section.get("resize", "keep_ratio")),
    }


def checkpoint_payload(
    model: nn.Module | Mapping[str, torch.Tensor], recipe: dict, class_names: list[str], category_ids: list[int]
) -> dict:
    """The "instaseg" part of a checkpoint. `model` may be a module or its state_dict (e.g. the EMA weights)."""
    if len(class_names) != len(category_ids):
        raise ValueError(f"{len(class_names)} class names but {len(category_ids)} category ids")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {
        "recipe": recipe,
        "class_names": [str(n) for n in class_names],
        "category_ids": [int(i) for i in category_ids],
        "input": input_section(recipe),
        "model_state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "version": __version__,
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module | Mapping[str, torch.Tensor],
    recipe: dict,
    class_names: list[str],
    category_ids: list[int],
) -> Path:
    """Write an instaseg checkpoint atomically (readers never see half a file)."""
    buffer = io.BytesIO()
    torch.save({"instaseg": checkpoint_payload(model, recipe, class_names, category_ids)}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_torch_file(path: str | Path) -> Any:
    """torch.load(weights_only=True) with a UserError for a missing, corrupt or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint file not found", path)
    if path.stat().st_size == 0:
        raise UserError("empty checkpoint file (0 bytes)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's remarks on pickle protocols say nothing to a user
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses pickled code; say so in one line rather than the long torch message
        found = _UNSAFE_GLOBAL.search(str(e))
        what = f" ({found.group(1)})" if found else ""
        msg = f"refused: holds pickled code or objects{what}; weights_only=True loads tensors and plain data only"
        raise UserError(msg, path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "central directory" in first or isinstance(e, EOFError):
            first = "the file ends early (truncated, or still being written)"
        raise UserError(f"corrupt or unreadable checkpoint: {first[:200]}", path) from None


def check_payload(part: Any, source: str | None) -> dict:
    """The "instaseg" part of a checkpoint, checked for its required keys (the input size filled in if absent)."""
    if not isinstance(part, Mapping):
        raise UserError("not an instaseg checkpoint (no 'instaseg' entry)", source)
    missing = [k for k in REQUIRED_KEYS if k not in part]
    if missing:
        raise UserError(f"incomplete instaseg checkpoint: missing {', '.join(missing)}", source)
    if len(part["class_names"]) != len(part["category_ids"]):
        raise UserError("checkpoint class_names and category_ids differ in length", source)
    info = dict(part)
    # a checkpoint written before input.resize existed was trained keeping the aspect ratio
    info["input"] = {"resize": "keep_ratio", **info.get("input", input_section(part["recipe"]))}
    return info


def load_checkpoint(path: str | Path) -> dict:
    """The "instaseg" part of an instaseg checkpoint or a Lightning .ckpt that carries it."""
    obj = read_torch_file(path)
    part = obj.get("instaseg") if isinstance(obj, Mapping) else None
    return check_payload(part, str(path))


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    """None when ``found`` fits a model whose state is ``expected``; else what differs, briefly (another
    architecture shows as missing keys, another class count as a shape mismatch in the heads)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        return f"{len(missing)} missing and {len(unexpected)} unexpected tensors, e.g. {first}: another architecture?"
    for key, value in expected.items():
        other = found[key]
        if not isinstance(other, torch.Tensor) or other.shape != value.shape:
            shape = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            return f"{key} is {shape}, the model needs {tuple(value.shape)}: another class count or model size?"
    return None
