"""instaseg.export: checkpoints -> self-contained ONNX / OpenVINO models (optionally INT8) for the same predictor.

`export_model(checkpoint, format="onnx" | "openvino", ...)`; exported files load with `instaseg.create_model`.
"""

from __future__ import annotations

from typing import Any

from instaseg.export.defaults import DEFAULT_MAX_AP_DROP, DEFAULT_VAL_IMAGES


def export_model(*args: Any, **kwargs: Any) -> dict:
    """See `instaseg.export.exporter.export_model` (imported on first use: torch and the runtimes are heavy)."""
    from instaseg.export.exporter import export_model as _export

    return _export(*args, **kwargs)


__all__ = ["DEFAULT_MAX_AP_DROP", "DEFAULT_VAL_IMAGES", "export_model"]
