"""`export_model`: an instaseg checkpoint -> a self-contained ONNX, OpenVINO (+ optional INT8) or TensorRT model."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.export.defaults import DEFAULT_CALIB_SIZE, DEFAULT_MAX_AP_DROP, DEFAULT_VAL_IMAGES
from instaseg.export.graph import DetectorGraph
from instaseg.export.metadata import PRECISIONS, build_metadata
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import INPUT_NAMES, OUTPUT_NAMES, InputSpec, QuantizationSettings, padded_size
from instaseg.utils.flops import count_flops
from instaseg.utils.io import atomic_write_json

FORMATS = ("onnx", "openvino", "tensorrt")
TIMING_IMAGES = 10  # calibration images the INT8 report times fp32 and INT8 on
logger = logging.getLogger(__name__)


def _check_options(fmt: str, precision: str, int8: bool, calib_data: Any, val_data: Any, max_ap_drop: float) -> None:
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
    if not int8 and val_data is not None:
        raise UserError("--val-data is only used with --int8")
    if not max_ap_drop >= 0:
        raise UserError(f"--max-ap-drop must be 0 or more mask AP points, got {max_ap_drop}")


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
    calib_size: int = DEFAULT_CALIB_SIZE,
    val_data: str | Path | None = None,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    val_images: int = DEFAULT_VAL_IMAGES,
    quantization: QuantizationSettings | None = None,
) -> dict:
    """Export an instaseg checkpoint; returns ``{"path", "format", "metadata"}`` and, for INT8, ``"report"``.

    ``out``: folder (default: ``export/`` beside the checkpoint). ``img_size``: input size (min and max side);
    default the checkpoint's. ``dynamic``: any input height and width; otherwise one fixed square graph that every
    resized image is padded into. ``precision``: fp32 | fp16 | bf16 (fp16/bf16: OpenVINO; fp16: TensorRT).
    ``int8``: NNCF post-training quantization (OpenVINO) calibrated on up to ``calib_size`` images from
    ``calib_data``, with the architecture's `QuantizationSettings`. INT8 keeps mask AP: with validation images
    (``val_data``: a dataset root or annotation file; by default ``calib_data`` when it is a dataset root with a
    val split) it quantizes under accuracy control, returning the most harmful layers to float until mask AP on up
    to ``val_images`` of them is within ``max_ap_drop`` points of fp32; the report (also written beside the model
    as ``model_int8.report.json``) gives AP before and after, the layers left in float, sizes and speed.
    ``quantization``: INT8 settings other than the architecture's own, to compare choices on a trained model.
    ``format="tensorrt"`` builds an engine for this machine's NVIDIA GPU from the same ONNX graph.
    """
    from instaseg.models.factory import model_from_checkpoint

    _check_options(format, precision, int8, calib_data, val_data, max_ap_drop)
    check_deploy_extra(format)
    model, info = model_from_checkpoint(checkpoint)
    if img_size is not None:
        if img_size < 32:
            raise UserError(f"--img-size must be at least 32, got {img_size}")
        info["input"] = {**info["input"], "min_size": int(img_size), "max_size": int(img_size)}
    spec = replace(model.input_spec, **{k: int(info["input"][k]) for k in ("min_size", "max_size")})
    images = calibration_images_or_none(calib_data, calib_size)
    gt = validation_images_or_none(val_data if val_data is not None else calib_data, val_images, val_data is not None)
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
        "mask_paste": str(model.mask_paste),  # how a per-box mask lands in its box: torchvision | exact
        # how an image-frame mask reaches the original picture: direct | canvas_rescale | two_step
        "mask_resample": str(model.mask_resample),
    }
    gflops = count_gflops(graph_module, *example)
    meta = build_metadata(info, spec, graph, precision, int8, gflops=round(gflops, 3), gflops_input=[height, width])
    out_dir = Path(out) if out is not None else Path(checkpoint).resolve().parent / "export"
    path = out_dir / output_name(format, precision, int8)
    int8_options = Int8Options(images, gt, max_ap_drop, quantization or model.quantization) if int8 else None
    report = _write(format, graph_module, example, meta, path, dynamic, precision, spec, int8_options)
    logger.info("exported %s", path)
    result = {"path": str(path), "format": format, "metadata": meta}
    if report is not None:
        atomic_write_json(report_path(path), report)
        result["report"] = report
    return result


def report_path(model_path: str | Path) -> Path:
    """Where the INT8 report of an exported model is written: ``model_int8.xml`` -> ``model_int8.report.json``."""
    return Path(model_path).with_suffix(".report.json")


def calibration_images_or_none(calib_data: str | Path | None, count: int) -> list[np.ndarray] | None:
    if calib_data is None:
        return None
    from instaseg.export.quantize import calibration_images

    return calibration_images(calib_data, count)


def validation_images_or_none(val_data: str | Path | None, count: int, asked: bool) -> Any:
    """The annotated validation images INT8 accuracy control measures on: from ``val_data`` when it was
    ``asked`` for (its errors are the user's), else from the calibration dataset's val split when it has one."""
    from instaseg.data.coco import split_file
    from instaseg.evaluation.parity import validation_subset

    if val_data is None or not (asked or split_file(val_data, "val").is_file()):
        return None
    return validation_subset(val_data, count)


@dataclass
class Int8Options:
    """What INT8 quantization works from: calibration images, validation images (None: no accuracy control),
    the mask AP points it may lose, and the architecture's settings."""

    images: list[np.ndarray]
    gt: Any
    max_ap_drop: float
    settings: QuantizationSettings


def _write(
    fmt: str,
    graph_module: DetectorGraph,
    example: tuple[torch.Tensor, ...],
    meta: dict,
    path: Path,
    dynamic: bool,
    precision: str,
    spec: InputSpec,
    int8: Int8Options | None,
) -> dict | None:
    """Write the model file; an INT8 export returns its report."""
    from instaseg.export.onnx import write_onnx

    if fmt == "onnx":
        write_onnx(graph_module, example, meta, path, dynamic)
        return None
    if fmt == "tensorrt":
        from instaseg.export.tensorrt import write_engine

        side = padded_size(spec.max_size, spec.size_divisible)
        with tempfile.TemporaryDirectory(prefix="instaseg_export_") as tmp:
            # TensorRT's If wants both branches to give one shape: its engine computes masks always
            onnx_path = write_onnx(graph_module, example, meta, Path(tmp) / "model.onnx", dynamic, defer_masks=False)
            write_engine(onnx_path, meta, path, precision, dynamic, spec.size_divisible, side)
        return None
    from instaseg.export.openvino import convert_onnx, save_ir

    report = None
    with tempfile.TemporaryDirectory(prefix="instaseg_export_") as tmp:
        # NNCF's INT8 calibration cannot follow tensors into an If's branches: a quantized model computes masks always
        onnx_path = write_onnx(graph_module, example, meta, Path(tmp) / "model.onnx", dynamic, defer_masks=int8 is None)
        ov_model = convert_onnx(onnx_path)  # may map the ONNX file's weights: finish before it goes
        if int8 is not None:
            ov_model, report = _quantize(ov_model, int8, meta, spec)
        save_ir(ov_model, path, meta, compress_to_fp16=precision == "fp16")
    return report


def _quantize(model: Any, options: Int8Options, meta: dict, spec: InputSpec) -> tuple[Any, dict]:
    from instaseg.export.accuracy import int8_report, quantize_keeping_ap
    from instaseg.export.quantize import calibration_feeds, detecting_feeds, quantize_openvino

    prepared = calibration_feeds(options.images, spec, meta["graph"])
    feeds = detecting_feeds(model, prepared)
    if options.gt is None:
        quantized = quantize_openvino(model, feeds, options.settings, spec)
    else:
        quantized = quantize_keeping_ap(model, feeds, options.settings, meta, options.gt, options.max_ap_drop, spec)
    max_drop = options.max_ap_drop if options.gt is not None else None
    report = int8_report(model, quantized, meta, options.settings, feeds[:TIMING_IMAGES], options.gt, max_drop)
    report["calibration_images"] = len(feeds)
    report["calibration_images_without_detections"] = len(prepared) - len(feeds)
    return quantized, report
