"""OpenVINO backend for models written by `instaseg export --format openvino` (.xml + .bin).

The precision stored at export is applied explicitly (``INFERENCE_PRECISION_HINT``): left to itself the CPU
plugin picks bf16 on CPUs that support it, and accuracy changes without anyone asking for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.backends.exported import ExportedBackend
from instaseg.models.detector import OUTPUT_NAMES
from instaseg.models.metadata import openvino_metadata


def _ov_device(device: str | torch.device) -> str:
    if str(device) in ("cpu", "auto"):
        return "CPU"
    raise UserError(f"the OpenVINO backend runs on the CPU here, not {device} (use --device cpu)")


def inference_precision(precision: str) -> str:
    """The CPU plugin's INFERENCE_PRECISION_HINT for an export precision.

    fp16 exports store f16 weights (half the file) but compute in f32 on the CPU: with the f16 hint, compiling an
    instance segmentation graph never finished on a Xeon whose CPU reports FP16 (avx512_fp16; OpenVINO 2026.4), while
    f32 took 0.4 s. bf16 computes in bf16 (AMX / avx512_bf16), which is where the CPU speed is."""
    return "bf16" if precision == "bf16" else "f32"


class OpenVinoBackend(ExportedBackend):
    name = "openvino"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None):
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
            raise UserError(f"cannot load OpenVINO model: {first}", path) from None
        super().__init__(openvino_metadata(model), path)
        config = {
            "INFERENCE_PRECISION_HINT": inference_precision(self.meta["precision"]),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, _ov_device(device), config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        result = self.request.infer(feed)
        # copies: the request reuses its output buffers on the next call
        return tuple(np.array(result[out]) for out in self.outputs)


def load(
    path: str | Path, device: str | torch.device = "cpu", threads: int | None = None
) -> tuple[OpenVinoBackend, dict]:
    backend = OpenVinoBackend(path, device, threads)
    return backend, backend.info()
