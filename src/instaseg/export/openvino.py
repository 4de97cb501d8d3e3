"""OpenVINO IR (.xml + .bin) from the exported ONNX graph, metadata in rt_info, precision made explicit.

The IR is converted from the same ONNX graph the ONNX Runtime backend runs (one graph, two runtimes). Precision:
OpenVINO's CPU plugin computes in bf16 by default on CPUs that support it, which silently changes accuracy; the
precision chosen at export is stored with the model and applied as ``INFERENCE_PRECISION_HINT`` when it is
compiled: fp32 -> f32 (matches eager), bf16 -> bf16, fp16 -> weights stored as f16 (half the file) and computed in
f32 (see `instaseg.inference.backends.openvino.inference_precision` for why).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from instaseg.models.metadata import RT_SECTION, to_strings


def convert_onnx(onnx_path: str | Path) -> Any:
    """An `openvino.Model` from an ONNX file."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def set_metadata(model: Any, meta: dict) -> None:
    for key, value in to_strings(meta).items():
        model.set_rt_info(value, [RT_SECTION, key])


def save_ir(model: Any, xml_path: str | Path, meta: dict, compress_to_fp16: bool = False) -> Path:
    """Write ``model`` with ``meta`` as IR: .bin then .xml moved into place, so the .xml never names a partial .bin."""
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    set_metadata(model, meta)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=f".{xml_path.stem}.") as tmp:
        tmp_xml = Path(tmp) / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        for suffix in (".bin", ".xml"):
            src = tmp_xml.with_suffix(suffix)
            os.chmod(src, 0o644)
            shutil.move(str(src), str(xml_path.with_suffix(suffix)))
    return xml_path

