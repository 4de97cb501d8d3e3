"""TensorRT engines (the `tensorrt` package from PyPI, an optional extra) built from the same ONNX graph.

The engine is built for the GPU it is built on, with one optimisation profile: a fixed square for a static
export, and every padded size up to the model's largest input for ``--dynamic``. Metadata travels in the file
(`instaseg.models.metadata.pack_engine`): TensorRT's plan format has no place for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from instaseg.errors import UserError
from instaseg.models.detector import INPUT_NAMES
from instaseg.models.metadata import pack_engine, to_strings
from instaseg.utils.io import atomic_write_bytes

ENGINE_PRECISIONS = ("fp32", "fp16")
WORKSPACE_BYTES = 4 << 30
logger = logging.getLogger(__name__)


def check_tensorrt(precision: str, int8: bool) -> None:
    """TensorRT needs its package and a CUDA GPU; say which is missing in one line."""
    import importlib.util

    import torch

    if int8:
        raise UserError(
            "INT8 TensorRT engines are not built by instaseg yet: use --precision fp16, or --format openvino --int8"
        )
    if precision not in ENGINE_PRECISIONS:
        raise UserError(f"TensorRT engines are built in {' or '.join(ENGINE_PRECISIONS)}, not {precision}")
    if importlib.util.find_spec("tensorrt") is None:
        raise UserError("exporting to tensorrt needs the tensorrt package: pip install 'instaseg[tensorrt]'")
    if not torch.cuda.is_available():
        raise UserError("a TensorRT engine is built on the NVIDIA GPU it will run on, and this machine has none")


def _network(trt: object, builder: object, onnx_path: Path) -> tuple[object, object]:
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit in TensorRT 10
    if explicit is not None:
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.WARNING))
    if not parser.parse_from_file(str(onnx_path)):
        first = str(parser.get_error(0)) if parser.num_errors else "unknown error"
        raise UserError(f"TensorRT cannot read the exported graph: {first}", onnx_path)
    return network, parser


def build_engine(onnx_path: Path, precision: str, shapes: tuple[tuple[int, ...], ...]) -> bytes:
    """A serialised engine of the ONNX graph; ``shapes``: the (min, opt, max) shapes of the ``images`` input."""
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network, _parser = _network(trt, builder, onnx_path)  # the parser owns weights the network points to
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    images, image_size = INPUT_NAMES
    profile.set_shape(images, *shapes)
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name == image_size and tensor.is_shape_tensor:  # a (h, w) that feeds shape arithmetic
            high = list(shapes[2][2:])
            profile.set_shape_input(image_size, [1, 1], high, high)
    config.add_optimization_profile(profile)
    logger.info("building the TensorRT %s engine (minutes for large models)", precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT could not build an engine from this graph (its log above says why)", onnx_path)
    return bytes(serialized)


def profile_shapes(side: int, dynamic: bool, stride: int) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) of the images input: the padded square ``side`` (the largest resized image padded), or
    for a dynamic export any padded height and width up to it."""
    full = (1, 3, side, side)
    return ((1, 3, stride, stride) if dynamic else full), full, full


def write_engine(
    onnx_path: Path, meta: dict, path: Path, precision: str, dynamic: bool, stride: int, side: int
) -> Path:
    engine = build_engine(onnx_path, precision, profile_shapes(side, dynamic, stride))
    return atomic_write_bytes(path, pack_engine(to_strings(meta), engine))
