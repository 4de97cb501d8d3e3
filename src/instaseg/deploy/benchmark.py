"""`benchmark`: latency per stage (pre-processing, inference, post-processing), throughput, peak memory, model size
and GFLOPs of a model on one or more backends, through the same `Predictor` users call.

Clocks are read after `backend.synchronize()` (the predictor does it), so CUDA timings measure the work, not its
launch. A recipe NAME benchmarks random weights with the score cut at 0, so every image carries the recipe's
``max_dets`` detections through post-processing (what a busy picture costs a trained model); a checkpoint or an
exported model is measured as it is.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import UserError

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
_EXPORTED = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt"}
_EXPORT_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), and CUDA's own peak."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.peak_rss = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.wait(0.005):
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        import psutil

        self.peak_rss = psutil.Process().memory_info().rss
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self.cuda:
            import torch

            self.peak_cuda = torch.cuda.max_memory_allocated()


def synthetic_pictures(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Shapes pictures (instaseg's synthetic data) resized to height x width: detectable objects, no download."""
    import cv2

    from instaseg.data.synthetic import synth_image

    side = max(64, min(512, max(height, width)))
    return [cv2.resize(synth_image(i, side, seed)[0], (width, height)) for i in range(count)]


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}


def file_size(path: Path) -> int:
    """Bytes on disk of a model file (an OpenVINO .xml with its .bin)."""
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def time_predictor(predictor: Any, pictures: list[np.ndarray], batch_size: int, warmup: int, iters: int) -> dict:
    """Per-stage latency per batch (median, p90), end-to-end throughput and peak memory over ``iters`` batches."""
    batches = [pictures[(i * batch_size) % len(pictures) :][:batch_size] for i in range(max(iters, 1))]
    batches = [b if len(b) == batch_size else (b + pictures)[:batch_size] for b in batches]
    for batch in batches[: max(warmup, 0)]:
        list(predictor.predict(batch, batch_size=batch_size))
    predictor.reset_timings()
    detections = []
    cuda = getattr(predictor.backend.device, "type", "cpu") == "cuda"
    with PeakMemory(cuda) as memory:
        start = time.perf_counter()
        for batch in batches[:iters]:
            detections.extend(len(r) for r in predictor.predict(batch, batch_size=batch_size))
        total = time.perf_counter() - start
    stages = {s: _stats(predictor.timings[s]) for s in ("preprocess", "model", "postprocess")}
    ends = np.sum([predictor.timings[s] for s in ("preprocess", "model", "postprocess")], axis=0)
    out = {
        "stages": stages,
        "end_to_end": _stats(list(ends)),
        "images_per_s": len(detections) / total,
        "detections_per_image": float(np.mean(detections)),
        "peak_rss_mb": memory.peak_rss / 2**20,
    }
    if cuda:
        out["peak_cuda_mb"] = memory.peak_cuda / 2**20
    return out


def random_checkpoint(recipe_name: str, folder: Path, img_size: int | None = None) -> Path:
    """A random-init checkpoint of a recipe, its score cut at 0 and its outputs made busy (`make_outputs_busy`), so
    each image keeps ``max_dets`` detections with partly filled masks: post-processing does a trained model's work
    on a busy image."""
    import torch

    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    sizes = [f"input.min_size={img_size}", f"input.max_size={img_size}"] if img_size else []
    recipe = apply_overrides(load_recipe(recipe_name), [*sizes, "eval.score_threshold=0.0"])
    torch.manual_seed(0)
    model = build_model(recipe, 80, weights="none")
    model.make_outputs_busy()
    names = [f"class{i}" for i in range(1, 81)]
    return save_checkpoint(folder / f"{recipe_name}_random.pt", model, recipe, names, list(range(1, 81)))


def torch_predictor(checkpoint: Path, img_size: int | None, device: str, threshold: float | None) -> tuple:
    import torch

    from instaseg.export.exporter import count_gflops, example_inputs
    from instaseg.export.graph import DetectorGraph
    from instaseg.inference.backends.torch import load
    from instaseg.inference.predictor import Predictor

    backend, info = load(checkpoint, device)
    if img_size:
        backend.spec.min_size = backend.spec.max_size = int(img_size)
    example = [t.to(backend.device) for t in example_inputs(backend.spec, dynamic=True)]
    gflops = count_gflops(DetectorGraph(backend.model).eval(), *example)
    size = sum(t.numel() * t.element_size() for t in [*backend.model.parameters(), *backend.model.buffers()])
    predictor = Predictor(backend, info["class_names"], info.get("category_ids"), threshold)
    return predictor, {"model_mb": size / 2**20, "gflops": gflops, "threads": torch.get_num_threads()}


def exported_predictor(
    path: Path, device: str, threads: int | None, threshold: float | None, static_shapes: str = "first"
) -> tuple:
    """A predictor on an exported model. OpenVINO graphs with a dynamic input size are timed in their steady state
    for the pictures' size, ``static_shapes="first"``: the static graph that the default ("auto") compiles once a
    stream of one size has run long enough (`instaseg.inference.backends.openvino`); warm-up pays its compile."""
    import importlib

    from instaseg.inference.predictor import Predictor

    module = importlib.import_module(f"instaseg.inference.backends.{_EXPORTED[path.suffix]}")
    options = {"static_shapes": static_shapes} if path.suffix == ".xml" else {}
    backend, info = module.load(path, device, threads=threads, **options)
    predictor = Predictor(backend, info["class_names"], info.get("category_ids"), threshold)
    return predictor, {"model_mb": file_size(path) / 2**20, "gflops": info.get("gflops"), "threads": threads}


def load_predictor(
    model: str, backend: str, workdir: Path, img_size: int | None, device: str, threads: int | None, threshold: Any
) -> tuple:
    """(Predictor, facts) for a recipe name, a checkpoint or an exported model on ``backend``; checkpoints are
    exported into ``workdir`` (fp32, dynamic size) for the ONNX Runtime and OpenVINO backends."""
    from instaseg.config import list_recipes

    path = Path(model)
    if path.suffix in _EXPORTED:
        if not path.is_file():
            raise UserError("model file not found", path)
        if backend != _EXPORTED[path.suffix]:
            raise UserError(f"a {path.suffix} model runs on {_EXPORTED[path.suffix]}, not {backend}", path)
        predictor, facts = exported_predictor(path, device, threads, threshold)
        if img_size and img_size not in (predictor.backend.spec.min_size, predictor.backend.spec.max_size):
            raise UserError(f"this model was exported for {predictor.backend.spec.max_size} px; re-export", path)
        return predictor, facts
    if not path.is_file():
        if model not in list_recipes():
            raise UserError("not a checkpoint, an exported model or a recipe name", model)
        path = random_checkpoint(model, workdir, img_size)
        threshold = 0.0 if threshold is None else threshold
    if backend == "torch":
        return torch_predictor(path, img_size, device, threshold)
    from instaseg.export.exporter import export_model

    exported = export_model(
        path,
        format=_EXPORT_FORMAT[backend],
        out=workdir / backend,
        img_size=img_size,
        dynamic=True,
    )
    return exported_predictor(Path(exported["path"]), device, threads, threshold)


def default_backends(model: str) -> list[str]:
    suffix = Path(model).suffix
    return [_EXPORTED[suffix]] if suffix in _EXPORTED else ["torch"]


def benchmark(
    model: str,
    backends: list[str] | None = None,
    img_size: int | None = None,
    batch_size: int = 1,
    warmup: int = 3,
    iters: int = 20,
    device: str = "cpu",
    threads: int | None = None,
    threshold: float | None = None,
    pictures: list[np.ndarray] | None = None,
) -> dict:
    """Benchmark ``model`` (recipe NAME, checkpoint or exported file) on each backend; returns
    ``{"model", "device", "batch_size", "image_size", "load_average", "backends": {name: {...}}}``."""
    import os

    from instaseg.utils.device import torch_threads

    if batch_size < 1 or iters < 1 or warmup < 0:
        raise UserError("--batch-size and --iters must be at least 1, --warmup at least 0")
    backends = backends or default_backends(model)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; use {', '.join(BACKENDS)}")
    results: dict[str, Any] = {}
    size = None
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="instaseg_bench_") as tmp:
        for name in backends:
            predictor, facts = load_predictor(model, name, Path(tmp), img_size, device, threads, threshold)
            spec = predictor.backend.spec
            size = (spec.min_size, spec.max_size)
            images = pictures or synthetic_pictures(max(batch_size, 4), *size)
            results[name] = {**facts, **time_predictor(predictor, images, batch_size, warmup, iters)}
            del predictor
    return {
        "model": str(model),
        "device": device,
        "batch_size": batch_size,
        "iters": iters,
        "image_size": list(size) if size else None,
        "load_average": list(os.getloadavg()),
        "backends": results,
    }
