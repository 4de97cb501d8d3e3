"""ONNX Runtime backend for models written by `instaseg export --format onnx`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.backends.exported import ExportedBackend
from instaseg.models.detector import OUTPUT_NAMES


def _providers(device: str | torch.device) -> list[str]:
    import onnxruntime as ort

    kind = torch.device("cuda" if str(device) == "auto" else device).type
    available = ort.get_available_providers()
    if kind == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if str(device) != "auto":
            raise UserError("CUDA was asked for but this onnxruntime has no CUDA provider (use --device cpu)")
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(ExportedBackend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=_providers(device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types for unreadable files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load ONNX model: {first}", path) from None
        super().__init__(self.session.get_modelmeta().custom_metadata_map, path)
        self.provider = self.session.get_providers()[0]

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(OUTPUT_NAMES), feed))


def load(
    path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
) -> tuple[OnnxRuntimeBackend, dict]:
    backend = OnnxRuntimeBackend(path, device, threads)
    return backend, backend.info()
