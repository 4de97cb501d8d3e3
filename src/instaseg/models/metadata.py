"""Reading what travels inside an exported model: classes, thresholds, input size, pre-processing, graph layout.

Stored as string key/value pairs (each value JSON) in the ONNX model's ``metadata_props`` and under the
``instaseg`` section of the OpenVINO model's ``rt_info``, so an exported file needs nothing else to be used.
Writing it is `instaseg.export.metadata`; reading it is here, below both export and the inference backends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instaseg.errors import UserError
from instaseg.models.detector import InputSpec

FORMAT_VERSION = 1
RT_SECTION = "instaseg"  # the OpenVINO rt_info section that holds the pairs
REQUIRED = ("class_names", "category_ids", "input", "preprocess", "graph", "precision")


def to_strings(meta: dict) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in meta.items()}


def from_strings(strings: dict[str, str], source: str | Path) -> dict:
    """Metadata back from string pairs; a model exported elsewhere (no instaseg keys) is a user error."""
    missing = [k for k in REQUIRED if k not in strings]
    if missing:
        raise UserError(f"not an instaseg export: metadata lacks {', '.join(missing)}", source)
    meta = {}
    for key, text in strings.items():
        try:
            meta[key] = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            meta[key] = text  # foreign keys (e.g. a producer's own) are kept as they are
    return meta


def spec_from_metadata(meta: dict) -> InputSpec:
    pre = meta["preprocess"]
    return InputSpec(
        min_size=int(meta["input"]["min_size"]),
        max_size=int(meta["input"]["max_size"]),
        mean=tuple(float(v) for v in pre["mean"]),
        std=tuple(float(v) for v in pre["std"]),
        size_divisible=int(pre["size_divisible"]),
    )


def openvino_metadata(model: Any) -> dict[str, str]:
    """The instaseg section of an `openvino.Model`'s rt_info as string pairs (empty when there is none)."""
    if not model.has_rt_info([RT_SECTION]):
        return {}
    section = model.get_rt_info([RT_SECTION]).astype(dict)
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in section.items()}
