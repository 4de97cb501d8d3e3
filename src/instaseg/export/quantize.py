"""INT8 post-training quantization of an OpenVINO model with NNCF, calibrated on the user's own images.

The calibration images go through the same pre-processing and one-image feeds as inference
(`instaseg.inference.backends.exported.graph_inputs`), so the activation ranges NNCF measures are the ones the
deployed model will see. Only images on which the fp32 model detects something calibrate (`detecting_feeds`): on
an image without detections the mask branch (RoI pooling and the mask head of two-stage models) runs on an empty
tensor, and NNCF then records a range of zero for every quantizer after it, which made INT8 masks flat (mask AP
23.7 -> 4.2 on the export tests' tiny Mask R-CNN, with one such image among ten; 24.6 without it).

What is quantized is the architecture's to say (`Detector.quantization`, a `QuantizationSettings`); `nncf_options`
turns it into NNCF's arguments, the same for plain and accuracy-controlled quantization
(`instaseg.export.accuracy`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import UserError
from instaseg.export.defaults import DEFAULT_CALIB_SIZE
from instaseg.inference.preprocess import InputSpec, preprocess
from instaseg.models.detector import QuantizationSettings
from instaseg.utils.progress import track

logger = logging.getLogger(__name__)


def calibration_images(source: str | Path, count: int = DEFAULT_CALIB_SIZE) -> list[np.ndarray]:
    """Up to ``count`` images, taken evenly over the sorted list so a folder ordered by scene is sampled across
    scenes. ``source``: a dataset root (its train split's images, so the validation images stay unseen for
    comparing INT8 with fp32), a folder (searched recursively), a glob or one image."""
    from instaseg.data.coco import load_coco, split_file
    from instaseg.inference.sources import iter_inputs

    if count < 1:
        raise UserError(f"the calibration subset needs at least one image, got {count}")
    inputs: str | list[Path] = str(source)
    if split_file(source, "train").is_file():
        train = load_coco(split_file(source, "train"))
        inputs = sorted(train.image_path(record) for record in train.images)
    items = [item for item in iter_inputs(inputs) if item.frame_index is None]
    if not items:
        raise UserError("no images found for calibration", source)
    picks = np.unique(np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int))
    return [items[i].read() for i in picks]


def calibration_feeds(images: list[np.ndarray], spec: InputSpec, graph: dict) -> list[dict[str, np.ndarray]]:
    from instaseg.inference.backends.exported import graph_inputs

    feeds = []
    for image in track(images, "preparing calibration images", stderr=False):
        batch, sizes = preprocess([image], spec)
        feeds.extend(graph_inputs(batch, sizes, graph, spec))
    return feeds


def detecting_feeds(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The ``feeds`` on which ``model`` (an fp32 `openvino.Model`) detects at least one object; see the module
    notes for why the others must not calibrate."""
    from instaseg.inference.backends.openvino import openvino_core

    request = openvino_core().compile_model(model, "CPU").create_infer_request()
    kept = [feed for feed in feeds if len(request.infer(feed)["scores"]) > 0]
    if not kept:
        raise UserError("the model detects nothing on any calibration image: INT8 ranges cannot be measured")
    if len(kept) < len(feeds):
        logger.info("calibrating on %d of %d images: the others yield no detection", len(kept), len(feeds))
    return kept


def quantizable_types() -> set[str]:
    """The OpenVINO operation types NNCF would quantize the inputs of, left to itself."""
    from nncf.openvino.graph.metatypes.groups import INPUTS_QUANTIZABLE_OPERATIONS

    return {name for metatype in INPUTS_QUANTIZABLE_OPERATIONS for name in metatype.get_all_aliases()}


def nncf_options(settings: QuantizationSettings, model: Any) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments (preset, model type, ignored scope, advanced parameters) that apply
    ``settings`` to ``model`` (an `openvino.Model`)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    nncf.set_log_level(logging.WARNING)  # at INFO it prints a line per operation it skips; our log says what matters
    present = {op.get_type_name() for op in model.get_ops()}
    float_types = sorted((quantizable_types() & present) - set(settings.quantized_ops))
    advanced: dict[str, Any] = {}
    if settings.range_estimator == "quantile":
        advanced["activations_range_estimator_params"] = RangeEstimatorParametersSet.MEAN_QUANTILE
    elif settings.range_estimator == "extremes":
        advanced["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
    if settings.transformer:
        alpha = -1.0 if settings.smooth_quant is None else float(settings.smooth_quant)  # NNCF: -1 turns it off
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=alpha)
    names = computed_products(model, settings.quantized_ops) if settings.float_computed_products else []
    names += constant_tables(model)
    scope = nncf.IgnoredScope(names=names, types=float_types, patterns=list(settings.float_patterns), validate=False)
    return {
        "preset": nncf.QuantizationPreset(settings.preset),
        "model_type": nncf.ModelType.TRANSFORMER if settings.transformer else None,
        "ignored_scope": scope,
        "advanced_parameters": AdvancedQuantizationParameters(**advanced),
    }


# operations through which a weight reaches a product unchanged in kind (layout, precision, folded scaling)
_WEIGHT_PATH = ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Multiply")


def _is_weight(port: Any, depth: int = 6) -> bool:
    node = port.get_source_output().get_node()
    if node.get_type_name() == "Constant":
        return True
    if depth == 0 or node.get_type_name() not in _WEIGHT_PATH:
        return False
    return all(_is_weight(p, depth - 1) for p in node.inputs())


def all_ops(model: Any) -> Iterator[Any]:
    """``model``'s operations and those of its If branches (the mask branch of `instaseg.export.mask_branch`),
    which NNCF quantizes too."""
    for op in model.get_ops():
        yield op
        if op.get_type_name() == "If":
            yield from all_ops(op.get_then_body())
            yield from all_ops(op.get_else_body())


def computed_products(model: Any, types: tuple[str, ...]) -> list[str]:
    """The names of ``model``'s operations of ``types`` whose second operand is no weight but computed."""
    ops = [op for op in all_ops(model) if op.get_type_name() in types and op.get_input_size() > 1]
    return sorted(op.get_friendly_name() for op in ops if not _is_weight(op.input(1)))


def constant_tables(model: Any) -> list[str]:
    """The names of ``model``'s Gather operations that read rows of a float constant table. NNCF quantizes such a
    table as an embedding's weights whatever the ignored types say; in a detector it is geometry (prior points,
    anchors, coordinate grids) and stays in float: RTMDet-Ins' prior points quantized so cost every mask (a
    trained fast recipe's val mask AP 75.9 -> 0.0, its boxes unchanged)."""
    ops = [op for op in all_ops(model) if op.get_type_name() == "Gather" and _is_weight(op.input(0))]
    return sorted(op.get_friendly_name() for op in ops if op.input(0).get_element_type().is_real())


def quantize_openvino(
    model: Any,
    feeds: list[dict[str, np.ndarray]],
    settings: QuantizationSettings = QuantizationSettings(),
    spec: InputSpec | None = None,
) -> Any:
    """NNCF post-training INT8 quantization of an `openvino.Model` as ``settings`` say (``spec``: the picture's
    pre-processing, which ``settings.picture_range`` needs)."""
    import nncf

    logger.info("calibrating INT8 on %d images", len(feeds))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **nncf_options(settings, model))
    return settings_finish(settings, spec)(quantized)


def picture_bounds(spec: InputSpec) -> tuple[float, float]:
    """The lowest and highest value a pre-processed picture holds: every channel's 256 grey levels normalised as
    the pre-processing does, and the padding. (A resize interpolates between levels, never past them.)"""
    from instaseg.utils.normalisation import level_table

    levels = level_table(spec.mean, spec.std, spec.normalisation)
    values = [float(levels.min()), float(levels.max()), *spec.pad_fill()]
    return min(values), max(values)


def cover_picture_range(model: Any, low: float, high: float) -> Any:
    """``model`` with each quantizer on its picture input (a 4-d Parameter) whose range falls short of [``low``,
    ``high``] widened, keeping its form (zero point, symmetry): its four range constants scaled by one factor. An
    unsigned quantizer (calibrated on no negative value) widens upwards only."""
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        source = op.input_value(0).get_node() if op.get_type_name() == "FakeQuantize" else None
        if source is None or source.get_type_name() != "Parameter":
            continue
        rank = source.get_output_partial_shape(0).rank
        if rank.is_dynamic or rank.get_length() != 4:  # the picture batch, not a size input
            continue
        ranges = [op.input_value(i).get_node().get_data().astype(np.float64) for i in range(1, 5)]
        in_low, in_high = float(ranges[0].min()), float(ranges[1].max())
        factor = max(high / in_high if in_high > 0 else 1.0, low / in_low if in_low < 0 else 1.0)
        if factor <= 1.0:
            continue
        for i, values in enumerate(ranges, start=1):
            op.input(i).replace_source_output(ops.constant((values * factor).astype(np.float32)).output(0))
        logger.info("INT8 input quantizer %s: range [%.4g, %.4g] widened %.3fx", op.get_friendly_name(), in_low,
                    in_high, factor)  # fmt: skip
    return model


def settings_finish(settings: QuantizationSettings, spec: InputSpec | None) -> Callable[[Any], Any]:
    """What ``settings`` ask of a model NNCF has just quantized, beyond NNCF's own arguments."""
    if not settings.picture_range:
        return lambda model: model
    if spec is None:
        raise ValueError("picture_range needs the input spec of the picture's pre-processing")
    low, high = picture_bounds(spec)
    return lambda model: cover_picture_range(model, low, high)


@contextlib.contextmanager
def after_each_nncf_quantization(finish: Callable[[Any], Any]) -> Iterator[None]:
    """``finish`` applied to every model NNCF's OpenVINO post-training quantization returns, within the block.
    NNCF's accuracy control quantizes and judges the result inside one call: this way the model it judges, and
    returns layers of to float, is the one that ships. (It calls ``quantize_impl`` by its module's name; a test
    checks that the finish still reaches it.)"""
    from nncf.openvino.quantization import quantize_model as nncf_openvino

    original = nncf_openvino.quantize_impl
    nncf_openvino.quantize_impl = lambda *args, **kwargs: finish(original(*args, **kwargs))
    try:
        yield
    finally:
        nncf_openvino.quantize_impl = original


def _agnostic_types() -> set[str]:
    """Operations a quantizer may sit in front of on behalf of the operation they feed (reshapes, pooling, ...)."""
    from nncf.openvino.graph.metatypes.groups import QUANTIZE_AGNOSTIC_OPERATIONS

    return {name for metatype in QUANTIZE_AGNOSTIC_OPERATIONS for name in metatype.get_all_aliases()} | {"Concat"}


def _quantized_input(port: Any, agnostic: set[str], depth: int = 16) -> bool:
    """Whether the value reaching ``port`` comes from a FakeQuantize, through quantization-agnostic operations."""
    node = port.get_source_output().get_node()
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind not in agnostic or depth == 0:
        return False
    return any(_quantized_input(p, agnostic, depth - 1) for p in node.inputs())


def float_layers(model: Any, types: tuple[str, ...]) -> tuple[list[str], int]:
    """The names of ``model``'s operations of ``types`` that compute in float (no input quantized), and how many
    such operations there are in all."""
    agnostic = _agnostic_types()
    layers = [op for op in model.get_ops() if op.get_type_name() in types]
    in_float = [op for op in layers if not any(_quantized_input(port, agnostic) for port in op.inputs())]
    return sorted(op.get_friendly_name() for op in in_float), len(layers)
