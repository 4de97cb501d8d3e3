"""TensorRT backend for engines written by `instaseg export --format tensorrt` (.engine).

Everything stays on the GPU until the detections come back: pre-processing runs on CUDA (the backend's device),
each image's padded crop is handed to the engine by address, and the outputs, whose detection count is only known
after the run, are allocated by TensorRT's output-allocator callback as torch CUDA tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.backends.exported import raw_detections
from instaseg.inference.postprocess import RawDetections
from instaseg.models.detector import INPUT_NAMES, OUTPUT_NAMES
from instaseg.models.metadata import from_strings, graph_from_metadata, spec_from_metadata, unpack_engine
from instaseg.utils.device import resolve_device


def _torch_dtype(trt: object, dtype: object) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=trt.nptype(dtype))).dtype


def _output_allocator(trt: object) -> object:
    """An IOutputAllocator that gives each output a torch CUDA buffer of the size TensorRT asks for."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            super().__init__()
            self.buffers: dict[str, torch.Tensor] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, name: str, memory: int, size: int, alignment: int) -> int:
            buffer = self.buffers.get(name)
            if buffer is None or buffer.numel() < size:
                buffer = torch.empty(max(int(size), 1), dtype=torch.uint8, device="cuda")
                self.buffers[name] = buffer
            return buffer.data_ptr()

        def reallocate_output_async(self, name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return self.reallocate_output(name, memory, size, alignment)

        def notify_shape(self, name: str, shape: object) -> None:
            self.shapes[name] = tuple(int(d) for d in shape)

    return OutputAllocator()


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | torch.device = "cuda"):
        strings, engine_bytes = unpack_engine(Path(path).read_bytes(), path)
        self.device = resolve_device("cuda" if str(device) == "auto" else device)
        if self.device.type != "cuda":
            raise UserError("a TensorRT engine runs on an NVIDIA GPU (use --device cuda)", path)
        try:
            import tensorrt as trt
        except ImportError:
            raise UserError("running a TensorRT engine needs: pip install 'instaseg[tensorrt]'", path) from None
        self.meta = from_strings(strings, path)
        self.spec = spec_from_metadata(self.meta, path)
        self.graph = graph_from_metadata(self.meta, path)
        self.trt = trt
        torch.cuda.set_device(self.device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise UserError("TensorRT cannot load this engine: it was built for another GPU or TensorRT version", path)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.allocator = _output_allocator(trt)
        for name in OUTPUT_NAMES:
            self.context.set_output_allocator(name, self.allocator)
        self.dtypes = {name: _torch_dtype(trt, self.engine.get_tensor_dtype(name)) for name in OUTPUT_NAMES}
        self.size_on_host = self.engine.is_shape_inference_io(INPUT_NAMES[1])

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def info(self) -> dict:
        return dict(self.meta)

    def _image(self, batch: torch.Tensor, index: int, h: int, w: int) -> torch.Tensor:
        if self.graph.get("dynamic", True):
            frame_h, frame_w = self.spec.padded_frame(h, w)
            return batch[index : index + 1, :, :frame_h, :frame_w].contiguous()
        image = self.spec.canvas(1, int(self.graph["height"]), int(self.graph["width"]), self.device)
        if h > image.shape[-2] or w > image.shape[-1]:
            raise UserError(f"a {h}x{w} input does not fit this engine's fixed {image.shape[-2]}x{image.shape[-1]}")
        image[..., :h, :w] = batch[index, :, :h, :w]
        return image

    def _run_one(self, image: torch.Tensor, h: int, w: int) -> tuple[np.ndarray, ...]:
        images, image_size = INPUT_NAMES
        size = torch.tensor([h, w], dtype=torch.int64, device="cpu" if self.size_on_host else self.device)
        self.context.set_input_shape(images, tuple(image.shape))
        if not self.size_on_host:
            self.context.set_input_shape(image_size, (2,))
        self.context.set_tensor_address(images, image.data_ptr())
        self.context.set_tensor_address(image_size, size.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # pre-processing wrote the image there
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        self.stream.synchronize()
        out = []
        for name in OUTPUT_NAMES:
            shape = self.allocator.shapes[name]
            dtype = self.dtypes[name]
            nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
            flat = self.allocator.buffers[name][:nbytes].view(dtype)
            out.append(flat.reshape(shape).cpu().numpy())
        return tuple(out)

    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        batch = batch.to(self.device, torch.float32)
        return [
            raw_detections(*self._run_one(self._image(batch, i, h, w), h, w), self.graph)
            for i, (h, w) in enumerate(image_sizes)
        ]


def load(path: str | Path, device: str | torch.device = "cuda", threads: int | None = None) -> tuple:
    backend = TensorRTBackend(path, device)
    return backend, backend.info()
