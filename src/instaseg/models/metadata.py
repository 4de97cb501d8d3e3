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
from instaseg.models.common.mask_resample import MASK_RESAMPLES
from instaseg.models.detector import InputSpec
from instaseg.utils.normalisation import NORMALISATIONS
from instaseg.utils.resize_rule import RESIZE_ORDERS, SIZE_ROUNDINGS

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


def spec_from_metadata(meta: dict, source: str | Path | None = None) -> InputSpec:
    """The `InputSpec` an export was made with; an unknown size rounding, resize order or normalisation is a user
    error naming ``source``."""
    pre = meta["preprocess"]
    rounding = meta["input"].get("size_rounding", "floor")  # older exports floored (torchvision's rule)
    if rounding not in SIZE_ROUNDINGS:
        raise UserError(f"unknown input.size_rounding {rounding!r} (known: {', '.join(SIZE_ROUNDINGS)})", source)
    order = meta["input"].get("resize_order", "float")  # older exports resized in float (torchvision's order)
    if order not in RESIZE_ORDERS:
        raise UserError(f"unknown input.resize_order {order!r} (known: {', '.join(RESIZE_ORDERS)})", source)
    arithmetic = meta["input"].get("normalisation", "unit")  # older exports normalised on [0, 1] in float32
    if arithmetic not in NORMALISATIONS:
        raise UserError(f"unknown input.normalisation {arithmetic!r} (known: {', '.join(NORMALISATIONS)})", source)
    return InputSpec(
        min_size=int(meta["input"]["min_size"]),
        max_size=int(meta["input"]["max_size"]),
        mean=tuple(float(v) for v in pre["mean"]),
        std=tuple(float(v) for v in pre["std"]),
        size_divisible=int(pre["size_divisible"]),
        keep_ratio=meta["input"].get("resize", "keep_ratio") == "keep_ratio",  # older exports kept the ratio
        pad_to_square=bool(pre.get("pad_to_square", False)),  # older exports padded with zeros
        pad_value=None if pre.get("pad_value") is None else float(pre["pad_value"]),
        size_rounding=rounding,
        resize_order=order,
        normalisation=arithmetic,
    )


def graph_from_metadata(meta: dict, source: str | Path | None = None) -> dict:
    """The export's graph layout (``meta["graph"]``); an unknown ``mask_resample`` is a user error naming ``source``
    (older exports have none: "direct", the one bilinear step they were made with)."""
    graph = dict(meta["graph"])
    resample = graph.setdefault("mask_resample", "direct")
    if resample not in MASK_RESAMPLES:
        raise UserError(f"unknown graph.mask_resample {resample!r} (known: {', '.join(MASK_RESAMPLES)})", source)
    return graph


def openvino_metadata(model: Any) -> dict[str, str]:
    """The instaseg section of an `openvino.Model`'s rt_info as string pairs (empty when there is none)."""
    if not model.has_rt_info([RT_SECTION]):
        return {}
    section = model.get_rt_info([RT_SECTION]).astype(dict)
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in section.items()}


# A TensorRT engine has no place for metadata: instaseg's .engine file is this magic, the length of the metadata
# (8 bytes, little-endian), the metadata as JSON string pairs, then the serialised engine.
ENGINE_MAGIC = b"INSTASEG-TRT\x00"


def pack_engine(meta_strings: dict[str, str], engine: bytes) -> bytes:
    header = json.dumps(meta_strings).encode()
    return ENGINE_MAGIC + len(header).to_bytes(8, "little") + header + engine


def unpack_engine(data: bytes, source: str | Path) -> tuple[dict[str, str], bytes]:
    """(metadata string pairs, serialised engine) of an instaseg .engine file."""
    start = len(ENGINE_MAGIC)
    if not data.startswith(ENGINE_MAGIC) or len(data) < start + 8:
        raise UserError("not an instaseg TensorRT engine (export it with instaseg export --format tensorrt)", source)
    length = int.from_bytes(data[start : start + 8], "little")
    try:
        strings = json.loads(data[start + 8 : start + 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError("corrupt instaseg TensorRT engine: unreadable metadata", source) from None
    engine = data[start + 8 + length :]
    if not isinstance(strings, dict) or not engine:
        raise UserError("corrupt instaseg TensorRT engine: truncated", source)
    return strings, engine
