"""INT8 that keeps the masks: NNCF's accuracy-controlled quantization with COCO mask AP as its metric, and the
INT8 export report (mask and box AP before and after, the layers left in float, file sizes, speed).

NNCF first quantizes the model as the architecture's `QuantizationSettings` say. If mask AP on the validation
images then falls by more than the allowed drop, it ranks the quantized layers by how much each costs (every
layer returned to float in turn, mask AP measured per image) and returns the most harmful ones to float, one at a
time, until the drop is within bounds. Every measurement goes through the shared predictor
(`instaseg.inference.predictor.Predictor`) on a model compiled in memory, so AP is what a user of the exported
file gets: the same pre-processing, post-processing and COCO scoring as `instaseg eval`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.export.defaults import DEFAULT_MAX_AP_DROP
from instaseg.export.quantize import after_each_nncf_quantization, float_layers, nncf_options, settings_finish
from instaseg.inference.preprocess import InputSpec
from instaseg.models.detector import QuantizationSettings

logger = logging.getLogger(__name__)
RANKING_IMAGES = 20  # images per layer when ranking layers by harm: the ranking is redone on every layer


def compile_f32(model: Any) -> Any:
    """``model`` compiled for the CPU computing in f32 where not quantized, as the OpenVINO backend runs exports."""
    from instaseg.inference.backends.openvino import openvino_core

    return openvino_core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    )


def in_memory_predictor(compiled: Any, meta: dict) -> Any:
    """The shared predictor over a compiled model, every detection kept (AP ranks them all)."""
    from instaseg.inference.backends.openvino import CompiledModelBackend
    from instaseg.inference.predictor import Predictor
    from instaseg.inference.tiling import TilingOptions

    backend = CompiledModelBackend(compiled, meta)
    return Predictor(backend, meta["class_names"], meta["category_ids"], 0.0, tiling=TilingOptions.from_info(meta))


def coco_ap(compiled: Any, meta: dict, gt: Any) -> dict[str, float]:
    """Mask and box AP in points (0-100) of a compiled model on every image of ``gt``."""
    from instaseg.evaluation.parity import predictor_metrics

    metrics = predictor_metrics(in_memory_predictor(compiled, meta), gt, max_dets=int(meta.get("max_dets") or 100))
    return {"mask_AP": float(metrics["mask_AP"]) * 100, "box_AP": float(metrics["box_AP"]) * 100}


def quantize_keeping_ap(
    model: Any,
    feeds: list[dict[str, np.ndarray]],
    settings: QuantizationSettings,
    meta: dict,
    gt: Any,
    max_drop: float = DEFAULT_MAX_AP_DROP,
    spec: InputSpec | None = None,
) -> Any:
    """``model`` (an `openvino.Model`) quantized to INT8 on the calibration ``feeds``, with as many layers returned
    to float as it takes for mask AP on ``gt``'s images to stay within ``max_drop`` points of fp32 (if it can).
    ``spec``: the picture's pre-processing, which ``settings.picture_range`` needs."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from instaseg.evaluation.parity import image_subset

    def mask_ap(compiled: Any, images: Any) -> tuple[float, None]:
        # NNCF calls this on the whole set and, to rank layers, on one image at a time
        return coco_ap(compiled, meta, image_subset(gt, list(images)))["mask_AP"], None

    options = nncf_options(settings, model)
    options["advanced_quantization_parameters"] = options.pop("advanced_parameters")
    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=RANKING_IMAGES, num_ranking_workers=1)
    logger.info("INT8 under accuracy control: mask AP on %d images, at most %.2f points lost", len(gt.images), max_drop)
    with after_each_nncf_quantization(settings_finish(settings, spec)):
        return nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(feeds),
            nncf.Dataset(list(gt.images)),
            mask_ap,
            max_drop=float(max_drop),
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(feeds),
            advanced_accuracy_restorer_parameters=restorer,
            **options,
        )


def ir_size(model: Any) -> int:
    """Bytes of ``model`` saved as IR (weights included)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="instaseg_size_") as tmp:
        path = Path(tmp) / "model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size


def network_ms(compiled: dict[str, Any], feeds: list[dict[str, np.ndarray]], rounds: int = 3) -> dict[str, float]:
    """Median milliseconds of one inference of each compiled model on ``feeds``, the models taking turns feed
    by feed (a load change on a shared machine then touches each alike); each feed runs once untimed first."""
    requests = {name: model.create_infer_request() for name, model in compiled.items()}
    times: dict[str, list[float]] = {name: [] for name in compiled}
    for round_ in range(rounds + 1):
        for feed in feeds:
            for name, request in requests.items():
                start = time.perf_counter()
                request.infer(feed)
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


def int8_report(
    fp32: Any,
    int8: Any,
    meta: dict,
    settings: QuantizationSettings,
    feeds: list[dict[str, np.ndarray]],
    gt: Any | None,
    max_drop: float | None,
) -> dict:
    """What the INT8 export changed against fp32: AP on ``gt`` (None: not measured), layers left in float, IR
    sizes and the network's speed on ``feeds``."""
    compiled = {"fp32": compile_f32(fp32), "int8": compile_f32(int8)}
    in_float, total = float_layers(int8, settings.quantized_ops)
    speed = network_ms(compiled, feeds)
    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(settings).items()},
        "max_ap_drop": max_drop,
        "float_layers": in_float,
        "quantizable_layers": total,
        "size_bytes": {"fp32": ir_size(fp32), "int8": ir_size(int8)},
        "network_ms": speed,
        "speedup": speed["fp32"] / speed["int8"],
        "accuracy": None,
    }
    if gt is not None:
        before, after = coco_ap(compiled["fp32"], meta, gt), coco_ap(compiled["int8"], meta, gt)
        report["accuracy"] = {"images": len(gt.images), "fp32": before, "int8": after}
        report["mask_ap_drop"] = before["mask_AP"] - after["mask_AP"]
        report["holds"] = max_drop is None or report["mask_ap_drop"] <= max_drop
    return report
