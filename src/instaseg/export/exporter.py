"""`export_model`: an instaseg checkpoint -> a self-contained ONNX, OpenVINO (+ optional INT8) or TensorRT model."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.export.graph import DetectorGraph
from instaseg.export.metadata import PRECISIONS, build_metadata
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import INPUT_NAMES, OUTPUT_NAMES, InputSpec, padded_size
from instaseg.utils.flops import count_flops

FORMATS = ("onnx", "openvino", "tensorrt")
logger = logging.getLogger(__name__)


def _check_options(fmt: str, precision: str, int8: bool, calib_data: Any) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if fmt == "onnx" and precision != "fp32":
        raise UserError("ONNX Runtime's CPU kernels compute in fp32: use --format openvino for fp16 or bf16")
    if fmt == "tensorrt":
        from instaseg.export.tensorrt import check_tensorrt

        check_tensorrt(precision, int8)
    if int8 and fmt != "openvino":
        raise UserError("INT8 quantization is done with NNCF on the OpenVINO model: use --format openvino")
    if int8 and calib_data is None:
        raise UserError("--int8 needs --calib-data (a folder of representative images)")
    if not int8 and calib_data is not None:
        raise UserError("--calib-data is only used with --int8")


def output_name(fmt: str, precision: str, int8: bool) -> str:
    """model.onnx / model.xml, with the precision in the name when it is not fp32."""
    stem = "model" + ("" if precision == "fp32" else f"_{precision}") + ("_int8" if int8 else "")
    return stem + {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}[fmt]


def example_inputs(spec: InputSpec, dynamic: bool, image: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
    """The tracing example: a picture (a calibration image when given, else smooth noise) pre-processed as at
    inference; a static graph gets the square that holds any resized image."""
    if image is None:
        rng = np.random.default_rng(0)
        side = spec.max_size
        noise = rng.integers(0, 255, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
        image = np.kron(noise, np.ones((8, 8, 1), dtype=np.uint8))[: spec.min_size, :side]
    batch, sizes = preprocess([image], spec)
    if not dynamic:
        side = padded_size(spec.max_size, spec.size_divisible)
        padded = spec.canvas(1, side, side)
        padded[..., : batch.shape[-2], : batch.shape[-1]] = batch[..., :side, :side]
        batch = padded
    return batch, torch.tensor(sizes[0], dtype=torch.int64)


def count_gflops(module: torch.nn.Module, *inputs: Any) -> float:
    """GFLOPs of one call (a multiply-add counts 2), by the counter every instaseg measurement uses."""
    return count_flops(module, *inputs) / 1e9


def check_deploy_extra(fmt: str) -> None:
    """Exporting needs the optional deploy packages; without them say which extra to install, in one line."""
    import importlib.util

    needed = ["onnx"] + (["openvino"] if fmt == "openvino" else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"exporting to {fmt} needs {' and '.join(missing)}, which are not installed: "
            "pip install 'instaseg[deploy]'"
        )


def export_model(
    checkpoint: str | Path,
    format: str = "onnx",  # noqa: A002 - the CLI's word
    out: str | Path | None = None,
    img_size: int | None = None,
    dynamic: bool = False,
    precision: str = "fp32",
    int8: bool = False,
    calib_data: str | Path | None = None,
    calib_size: int = 100,
) -> dict:
    """Export an instaseg checkpoint; returns ``{"path", "format", "metadata"}``.

    ``out``: folder (default: ``export/`` beside the checkpoint). ``img_size``: input size (min and max side);
    default the checkpoint's. ``dynamic``: any input height and width; otherwise one fixed square graph that every
    resized image is padded into. ``precision``: fp32 | fp16 | bf16 (fp16/bf16: OpenVINO; fp16: TensorRT).
    ``int8``: NNCF post-training quantization (OpenVINO) calibrated on up to ``calib_size`` images from
    ``calib_data``. ``format="tensorrt"`` builds an engine for this machine's NVIDIA GPU from the same ONNX graph.
    """
    from instaseg.models.factory import model_from_checkpoint

    _check_options(format, precision, int8, calib_data)
    check_deploy_extra(format)
    model, info = model_from_checkpoint(checkpoint)
    if img_size is not None:
        if img_size < 32:
            raise UserError(f"--img-size must be at least 32, got {img_size}")
        info["input"] = {**info["input"], "min_size": int(img_size), "max_size": int(img_size)}
    spec = replace(model.input_spec, **{k: int(info["input"][k]) for k in ("min_size", "max_size")})
    images = calibration_images_or_none(calib_data, calib_size)
    graph_module = DetectorGraph(model).eval()
    example = example_inputs(spec, dynamic, images[0] if images else None)
    height, width = example[0].shape[-2:]
    graph = {
        "batch": 1,
        "dynamic": bool(dynamic),
        "height": None if dynamic else int(height),
        "width": None if dynamic else int(width),
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "mask_stride": model.mask_stride,  # None: masks per box; S: image-frame masks at stride S
        "mask_logits": bool(model.mask_logits),  # masks are logits (resampled as such), not probabilities
        "mask_box_crop": bool(model.mask_box_crop),  # image-frame masks are cut to their boxes
    }
    gflops = count_gflops(graph_module, *example)
    meta = build_metadata(info, spec, graph, precision, int8, gflops=round(gflops, 3), gflops_input=[height, width])
    out_dir = Path(out) if out is not None else Path(checkpoint).resolve().parent / "export"
    path = out_dir / output_name(format, precision, int8)
    _write(format, graph_module, example, meta, path, dynamic, precision, images, spec)
    logger.info("exported %s", path)
    return {"path": str(path), "format": format, "metadata": meta}


def calibration_images_or_none(calib_data: str | Path | None, count: int) -> list[np.ndarray] | None:
    if calib_data is None:
        return None
    from instaseg.export.quantize import calibration_images

    return calibration_images(calib_data, count)


def _write(
    fmt: str,
    graph_module: DetectorGraph,
    example: tuple[torch.Tensor, ...],
    meta: dict,
    path: Path,
    dynamic: bool,
    precision: str,
    images: list[np.ndarray] | None,
    spec: InputSpec,
) -> None:
    from instaseg.export.onnx import write_onnx

    if fmt == "onnx":
        write_onnx(graph_module, example, meta, path, dynamic)
        return
    if fmt == "tensorrt":
        from instaseg.export.tensorrt import write_engine

        side = padded_size(spec.max_size, spec.size_divisible)
        with tempfile.TemporaryDirectory(prefix="instaseg_export_") as tmp:
            # TensorRT's If wants both branches to give one shape: its engine computes masks always
            onnx_path = write_onnx(graph_module, example, meta, Path(tmp) / "model.onnx", dynamic, defer_masks=False)
            write_engine(onnx_path, meta, path, precision, dynamic, spec.size_divisible, side)
        return
    from instaseg.export.openvino import convert_onnx, save_ir

    with tempfile.TemporaryDirectory(prefix="instaseg_export_") as tmp:
        # NNCF's INT8 calibration cannot follow tensors into an If's branches: a quantized model computes masks always
        onnx_path = write_onnx(graph_module, example, meta, Path(tmp) / "model.onnx", dynamic, defer_masks=not images)
        ov_model = convert_onnx(onnx_path)  # may map the ONNX file's weights: finish before it goes
        if images:
            from instaseg.export.quantize import calibration_feeds, quantize_openvino

            ov_model = quantize_openvino(ov_model, calibration_feeds(images, spec, meta["graph"]))
        save_ir(ov_model, path, meta, compress_to_fp16=precision == "fp16")
