"""High-performance mode: pick the fastest backend whose accuracy stays within a tolerance of fp32 eager.

`choose_backend` exports a checkpoint to every runtime and precision this machine offers (torch; ONNX Runtime;
OpenVINO fp32, bf16 where the CPU computes bf16, INT8 calibrated on the dataset's train split and quantized under
accuracy control (layers return to float until mask AP on the validation images is within the tolerance of
OpenVINO fp32, so INT8 is picked wherever it holds); on a GPU, torch on
CUDA, ONNX Runtime's CUDA provider and TensorRT fp32/fp16 when installed), measures each one's COCO mask AP on the
dataset's validation images and its end-to-end latency on those images through the shared predictor, keeps those
within ``tolerance`` AP points of torch fp32 and picks the fastest. The decision, its table and the exported models
are cached per checkpoint, validation set and machine, so the next call costs one file read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import UserError
from instaseg.utils.cache import cache_root
from instaseg.utils.io import atomic_write_json

logger = logging.getLogger(__name__)
DEFAULT_TOLERANCE = 0.5  # AP points (0-100 scale) of mask AP below torch fp32 that a faster backend may lose
CHOICE_FILE = "choice.json"


@dataclass
class Candidate:
    """One way to run the model: a runtime, a precision and how to export for it (None: the checkpoint itself)."""

    label: str
    backend: str
    precision: str = "fp32"
    export: dict | None = None
    device: str = "cpu"


@dataclass
class Row:
    """What was measured of a candidate."""

    label: str
    backend: str
    precision: str
    device: str
    mask_ap: float | None = None
    box_ap: float | None = None
    median_ms: float | None = None
    images_per_s: float | None = None
    model: str = ""
    kept: bool = False
    note: str = ""
    stages_ms: dict = field(default_factory=dict)


def _cpu_has_bf16() -> bool:
    try:
        from instaseg.inference.backends.openvino import openvino_core

        return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO, or a plugin that does not answer: offer no bf16
        return False


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def candidates(device: str) -> list[Candidate]:
    """The runtimes and precisions this machine can run, torch fp32 (the accuracy reference) first."""
    out = [Candidate("torch fp32", "torch", device=device)]
    if device == "cuda":
        out.append(Candidate("torch amp fp16", "torch", "fp16", device="cuda"))
        if _installed("onnxruntime"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                out.append(Candidate("onnxruntime cuda fp32", "onnxruntime", export={"format": "onnx"}, device="cuda"))
        if _installed("tensorrt"):
            for precision in ("fp32", "fp16"):
                export = {"format": "tensorrt", "precision": precision}
                out.append(Candidate(f"tensorrt {precision}", "tensorrt", precision, export, device="cuda"))
        return out
    if _installed("onnxruntime") and _installed("onnx"):
        out.append(Candidate("onnxruntime fp32", "onnxruntime", export={"format": "onnx"}))
    if _installed("openvino"):
        out.append(Candidate("openvino fp32", "openvino", export={"format": "openvino"}))
        if _cpu_has_bf16():
            out.append(Candidate("openvino bf16", "openvino", "bf16", {"format": "openvino", "precision": "bf16"}))
        if _installed("nncf"):
            out.append(Candidate("openvino int8", "openvino", "int8", {"format": "openvino", "int8": True}))
    return out


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def machine_fingerprint(device: str) -> dict:
    """What makes a latency ranking belong to this machine: processor, cores, GPU and runtime versions."""
    import os

    import torch

    versions = {}
    for module in ("onnxruntime", "openvino", "tensorrt"):
        if _installed(module):
            versions[module] = getattr(__import__(module), "__version__", "?")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, **versions}


def _model_file(candidate: Candidate, checkpoint: Path, folder: Path, data: Path, settings: dict) -> Path:
    if candidate.export is None:
        return checkpoint
    from instaseg.export.exporter import export_model

    options = dict(candidate.export)
    if options.get("int8"):
        options["calib_data"] = data
        options["calib_size"] = 32  # enough for NNCF's ranges on small sets; keeps the choice a few minutes long
        # accuracy control on the images the choice is measured on, the drop it may take being the tolerance
        options.update(val_data=data, val_images=settings["max_images"], max_ap_drop=settings["tolerance"])
    out = folder / candidate.label.replace(" ", "_")
    return Path(export_model(checkpoint, out=out, **options)["path"])


def _measure(candidate: Candidate, path: Path, gt: Any, images: list[np.ndarray], max_dets: int, iters: int) -> Row:
    from instaseg.deploy.benchmark import time_predictor
    from instaseg.evaluation.parity import predictor_metrics
    from instaseg.inference.predictor import DEFAULT_THRESHOLD, create_model

    amp = candidate.backend == "torch" and candidate.precision == "fp16"
    predictor = create_model(path, device=candidate.device, threshold=0.0, amp=amp)  # AP ranks every detection
    metrics = predictor_metrics(predictor, gt, max_dets=max_dets)
    predictor.threshold = DEFAULT_THRESHOLD  # latency as a user's call pays it
    timing = time_predictor(predictor, images, batch_size=1, warmup=2, iters=iters)
    return Row(
        candidate.label,
        candidate.backend,
        candidate.precision,
        candidate.device,
        mask_ap=float(metrics["mask_AP"]) * 100,
        box_ap=float(metrics["box_AP"]) * 100,
        median_ms=timing["end_to_end"]["median_ms"],
        images_per_s=timing["images_per_s"],
        model=str(path),
        stages_ms={s: v["median_ms"] for s, v in timing["stages"].items()},
    )


def decide(rows: list[Row], tolerance: float) -> Row:
    """Keep the rows within ``tolerance`` mask AP points of the first (the reference); the fastest kept wins."""
    reference = rows[0]
    if reference.mask_ap is None:
        raise UserError(f"the reference backend ({reference.label}) could not be measured: {reference.note}")
    for row in rows:
        row.kept = row.mask_ap is not None and row.mask_ap >= reference.mask_ap - tolerance
    return min((r for r in rows if r.kept), key=lambda r: r.median_ms)


def _cache_folder(checkpoint: Path, gt: Any, settings: dict) -> Path:
    annotations = hashlib.sha256(json.dumps(gt.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    key = json.dumps(
        [_file_digest(checkpoint), annotations, machine_fingerprint(settings["device"]), settings], sort_keys=True
    )
    return cache_root() / "auto" / f"{checkpoint.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def choose_backend(
    checkpoint: str | Path,
    val_data: str | Path,
    device: str = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
    max_images: int = 20,
    iters: int = 10,
    refresh: bool = False,
) -> dict:
    """Measure every candidate on ``val_data`` (a COCO dataset root: val split for accuracy, train split for INT8
    calibration) and return ``{"choice": Row, "rows": [Row], "cached": bool, "folder", "tolerance", "machine"}``."""
    from instaseg.evaluation.parity import validation_subset
    from instaseg.utils.device import resolve_device
    from instaseg.utils.images import read_image

    checkpoint = Path(checkpoint)
    if checkpoint.suffix.lower() not in (".ckpt", ".pt", ".pth"):
        raise UserError("--backend auto starts from a checkpoint (.ckpt/.pt), not an exported model", checkpoint)
    if not checkpoint.is_file():
        raise UserError("checkpoint file not found", checkpoint)
    device = resolve_device(device).type
    gt = validation_subset(val_data, max_images)
    settings = {"device": device, "tolerance": tolerance, "max_images": max_images, "iters": iters}
    folder = _cache_folder(checkpoint, gt, settings)
    cached = _read_choice(folder) if not refresh else None
    if cached is not None:
        return cached
    from instaseg.models.checkpoint import load_checkpoint

    max_dets = int(load_checkpoint(checkpoint)["recipe"]["eval"]["max_dets"])
    images = [read_image(gt.image_path(record)) for record in gt.images]
    rows = []
    for candidate in candidates(device):
        logger.info("measuring %s", candidate.label)
        try:
            path = _model_file(candidate, checkpoint, folder, Path(val_data), settings)
            rows.append(_measure(candidate, path, gt, images, max_dets, iters))
        except (UserError, RuntimeError, ImportError) as e:  # a runtime that fails here is not a choice here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            rows.append(Row(candidate.label, candidate.backend, candidate.precision, candidate.device, note=first))
    choice = decide(rows, tolerance)
    result = {
        "choice": choice,
        "rows": rows,
        "cached": False,
        "folder": str(folder),
        "tolerance": tolerance,
        "machine": machine_fingerprint(device),
        "images": len(gt.images),
    }
    atomic_write_json(folder / CHOICE_FILE, {**result, "choice": asdict(choice), "rows": [asdict(r) for r in rows]})
    return result


def _read_choice(folder: Path) -> dict | None:
    """A cached decision whose chosen model file still exists."""
    try:
        saved = json.loads((folder / CHOICE_FILE).read_text())
        rows = [Row(**r) for r in saved["rows"]]
        choice = Row(**saved["choice"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not Path(choice.model).is_file():
        return None
    return {**saved, "choice": choice, "rows": rows, "cached": True}


def create_auto_model(
    checkpoint: str | Path, val_data: str | Path, device: str = "cpu", threshold: float | None = None, **options: Any
) -> Any:
    """The Predictor of the chosen backend, and the decision: ``(predictor, result)``."""
    from instaseg.inference.predictor import create_model

    result = choose_backend(checkpoint, val_data, device=device, **options)
    choice = result["choice"]
    amp = choice.backend == "torch" and choice.precision == "fp16"
    return create_model(choice.model, device=choice.device, threshold=threshold, amp=amp), result
