"""OpenVINO backend for models written by `instaseg export --format openvino` (.xml + .bin).

The precision stored at export is applied explicitly (``INFERENCE_PRECISION_HINT``): left to itself the CPU
plugin picks bf16 on CPUs that support it, and accuracy changes without anyone asking for it.

Shape specialisation: a graph exported with a dynamic input size also runs as a copy reshaped to one input shape,
which the CPU plugin compiles with static shapes (blocked layouts and kernels picked once, no per-call shape
inference): 1.1-1.3x faster on ResNet-50-FPN INT8 at 800x1088 on a 2-core Xeon. fp32 outputs are unchanged;
INT8 ones can differ a little (other integer kernels), as between two machines. A compile costs
about as much as a few inferences (0.8-2 s for that model), so ``static_shapes="auto"`` pays it the way one decides
to buy rather than rent: once the time already spent at a shape, times the saving, exceeds the compile time. On
tiny_coco's pictures that model switched at image 72 of 100 (after about 20 at the commonest size); a small model
whose inference is short next to its compile switches late or never, and a folder of mixed sizes never pays for
compiles it cannot win back. At most `MAX_STATIC` shapes are compiled per model (memory stays bounded and a stream
of varying sizes cannot cause compile after compile).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.backends.exported import ExportedBackend
from instaseg.models.detector import OUTPUT_NAMES
from instaseg.models.metadata import openvino_metadata, to_strings

STATIC_SHAPES = ("auto", "first", "off")  # "first": specialise a shape on first sight (a fixed camera); "off": never
MAX_STATIC = 4
EXPECTED_SAVING = 0.15  # the share of a dynamic-shape inference a static graph saves (measured 0.1-0.25, see above)


@functools.cache
def openvino_core() -> Any:
    """One OpenVINO Core for the process (every model, and the CPU query of `--backend auto`), as OpenVINO advises.
    With a Core per model (and more per model once static copies were compiled), a later, unrelated error message
    crashed the process: after a test had created and dropped several Cores, a DataLoader worker killed in the next
    test made Python decode "Connection reset by peer", and glibc's locale conversion segfaulted (gdb backtrace in
    mbsrtowcs). With one Core it did not, in repeated runs."""
    import openvino as ov

    return ov.Core()


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

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        static_shapes: str = "auto",
    ):
        if static_shapes not in STATIC_SHAPES:
            raise ValueError(f"static_shapes must be one of {STATIC_SHAPES}, got {static_shapes!r}")
        self.path = Path(path)
        try:
            model = openvino_core().read_model(str(path))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
            raise UserError(f"cannot load OpenVINO model: {first}", path) from None
        super().__init__(openvino_metadata(model), path)
        self.config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": inference_precision(self.meta["precision"]),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.ov_device = _ov_device(device)
        start = time.perf_counter()
        self.compiled = openvino_core().compile_model(model, self.ov_device, self.config)
        self.compile_seconds = time.perf_counter() - start
        self.request = self.compiled.create_infer_request()
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        # a graph exported with a fixed size is static already
        self.static_shapes = static_shapes if self.graph.get("dynamic", True) else "off"
        self.specialised: dict[tuple[int, ...], Any] = {}  # input shape -> infer request of its static graph
        self.seconds_at: dict[tuple[int, ...], float] = {}  # input shape -> inference time spent at it, dynamic

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        shape = tuple(feed["images"].shape)
        request = self.specialised.get(shape)
        if request is None and self._worth_specialising(shape):
            request = self.specialised[shape] = self._compile_static(shape)
        # share_inputs: the feed is ours, contiguous and alive until infer returns (one copy less); outputs are
        # left to infer's default, copies, since the request reuses its buffers
        if request is None:
            start = time.perf_counter()
            result = self.request.infer(feed, share_inputs=True)
            self.seconds_at[shape] = self.seconds_at.get(shape, 0.0) + time.perf_counter() - start
        else:
            result = request.infer(feed, share_inputs=True)
        # by name: a static graph's output ports are not the dynamic one's
        return tuple(result[name] for name in OUTPUT_NAMES)

    def _worth_specialising(self, shape: tuple[int, ...]) -> bool:
        if self.static_shapes == "off" or len(self.specialised) >= MAX_STATIC:
            return False
        if self.static_shapes == "first":
            return True
        return self.seconds_at.get(shape, 0.0) * EXPECTED_SAVING >= self.compile_seconds

    def _compile_static(self, shape: tuple[int, ...]) -> Any:
        # read again rather than kept from __init__: holding the source model would keep its weights for the
        # backend's lifetime to serve at most MAX_STATIC compiles
        model = openvino_core().read_model(str(self.path))
        model.reshape({"images": list(shape)})
        return openvino_core().compile_model(model, self.ov_device, self.config).create_infer_request()


class CompiledModelBackend(ExportedBackend):
    """An `openvino.CompiledModel` in memory with the metadata its export will carry: INT8 export measures each
    candidate model through the shared predictor before any file is written (`instaseg.export.accuracy`)."""

    name = "openvino"

    def __init__(self, compiled: Any, meta: dict, source: str = "the model being exported"):
        super().__init__(to_strings(meta), source)
        self.request = compiled.create_infer_request()

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        result = self.request.infer(feed)
        return tuple(np.array(result[name]) for name in OUTPUT_NAMES)


def load(
    path: str | Path, device: str | torch.device = "cpu", threads: int | None = None, static_shapes: str = "auto"
) -> tuple[OpenVinoBackend, dict]:
    backend = OpenVinoBackend(path, device, threads, static_shapes)
    return backend, backend.info()
