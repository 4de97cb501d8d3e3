"""ONNX export with torch's TorchScript-based exporter, metadata included.

torch's legacy exporter (``dynamo=False``) traces the detectors' code, as torchvision's detection code expects
(explicit ONNX support for NMS, RoIAlign, top-k with dynamic counts); the dynamo exporter trips on NMS and the
mask-pasting loop. The graph is `DetectorGraph`: one image per call, masks left at low resolution.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import torch

from instaseg.export.graph import DetectorGraph
from instaseg.export.mask_branch import defer_mask_branch
from instaseg.models.detector import INPUT_NAMES, OUTPUT_NAMES
from instaseg.models.metadata import to_strings
from instaseg.utils.io import atomic_write_bytes

DEFAULT_OPSET = 17
logger = logging.getLogger(__name__)


def _dynamic_axes(dynamic: bool) -> dict[str, dict[int, str]]:
    # detections per image always vary (zero included); the picture's size only with --dynamic
    axes: dict[str, dict[int, str]] = {name: {0: "detections"} for name in OUTPUT_NAMES}
    if dynamic:
        axes["images"] = {2: "height", 3: "width"}
    return axes


def export_onnx_bytes(
    graph: DetectorGraph, example: tuple[torch.Tensor, torch.Tensor], dynamic: bool, opset: int = DEFAULT_OPSET
) -> bytes:
    """Trace ``graph`` on ``example`` (images [1,3,H,W], image_size [2]) and return the serialised ONNX model."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about every Python-level shape computation a detector makes; they are expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(),
            example,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=_dynamic_axes(dynamic),
            do_constant_folding=True,
        )
    return buffer.getvalue()


def add_metadata(model_bytes: bytes, meta: dict) -> bytes:
    """The ONNX model with ``meta`` in its metadata_props (replacing keys of the same name)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    strings = to_strings(meta)
    kept = [p for p in model.metadata_props if p.key not in strings]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in strings.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "instaseg"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_onnx(
    graph: DetectorGraph,
    example: tuple[torch.Tensor, torch.Tensor],
    meta: dict,
    path: str | Path,
    dynamic: bool,
    opset: int = DEFAULT_OPSET,
    defer_masks: bool = True,
) -> Path:
    """Export ``graph`` with ``meta`` to ``path`` (written atomically). ``defer_masks``: the mask-only nodes run
    only when something was detected (`instaseg.export.mask_branch`)."""
    import onnx

    data = export_onnx_bytes(graph, example, dynamic, opset)
    if defer_masks:
        data = defer_mask_branch(onnx.load_from_string(data), graph.model.mask_stride).SerializeToString()
    return atomic_write_bytes(path, add_metadata(data, meta))
