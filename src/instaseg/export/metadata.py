"""What an export writes inside the model: classes, thresholds, input size, pre-processing, graph layout, precision.

Stored as string key/value pairs (each value JSON; `instaseg.models.metadata` reads them back) in the ONNX
model's ``metadata_props`` and under the ``instaseg`` section of the OpenVINO model's ``rt_info``, so an exported
file needs nothing else to be used.
"""

from __future__ import annotations

from typing import Any

from instaseg.models.detector import InputSpec
from instaseg.models.metadata import FORMAT_VERSION, to_strings
from instaseg.utils.normalisation import pixel_constants
from instaseg.version import __version__

__all__ = ["PRECISIONS", "build_metadata", "to_strings"]

PRECISIONS = ("fp32", "fp16", "bf16")


def pad_description(spec: InputSpec) -> str:
    """How an image is padded, in words, for readers of the exported file that are not instaseg."""
    value = "zeros (after normalisation)" if spec.pad_value is None else f"pixel value {spec.pad_value:.6g} on [0, 1]"
    canvas = f", to at least {spec.max_size}x{spec.max_size}" if spec.pad_to_square else ""
    return f"{value} at the bottom and right, to a multiple of {spec.size_divisible}{canvas}"


def resize_description(spec: InputSpec) -> str:
    """How an image is resized, in words, for readers of the exported file that are not instaseg."""
    if spec.keep_ratio:
        side = "floor(side * scale)" if spec.size_rounding == "floor" else "int(side * scale + 0.5)"
        rule = f"by scale = min(min_size / min(h, w), max_size / max(h, w)), each side {side}"
    else:
        rule = "to max_size x max_size (the aspect ratio not kept)"
    if spec.resize_order == "float":
        return f"bilinear (after normalising, in float) {rule}"
    if spec.resize_order == "float_opencv_bilinear":
        return f"the normalised float32 picture by OpenCV cv2.resize INTER_LINEAR (after normalising) {rule}"
    interpolation = "INTER_LINEAR" if spec.resize_order == "uint8_bilinear" else "INTER_CUBIC"
    return f"the uint8 picture by OpenCV cv2.resize {interpolation} (before normalising) {rule}"


def normalise_description(spec: InputSpec) -> str:
    """The float32 arithmetic of the normalisation, in words, for readers of the exported file that are not
    instaseg (see `instaseg.utils.normalisation`)."""
    if spec.normalisation == "pixel":
        mean, std = pixel_constants(spec.mean), pixel_constants(spec.std)
        return f"(v - mean_px) / std_px in float32 on the 0..255 values, mean_px {list(mean)}, std_px {list(std)}"
    if spec.normalisation == "paddle":
        return "v / 255 in float32, then - mean and / std each computed in float64 and rounded to float32"
    return "(v / 255 - mean) / std in float32"


def build_metadata(
    info: dict, spec: InputSpec, graph: dict, precision: str = "fp32", int8: bool = False, **extra: Any
) -> dict:
    """The metadata of an export: ``info`` is a checkpoint's (class_names, category_ids, recipe)."""
    from instaseg.inference.predictor import DEFAULT_THRESHOLD

    recipe = info.get("recipe") or {}
    evaluation = recipe.get("eval", {})
    return {
        "format_version": FORMAT_VERSION,
        "instaseg_version": __version__,
        "recipe": recipe.get("name"),
        "class_names": list(info["class_names"]),
        "category_ids": [int(i) for i in info["category_ids"]],
        "score_threshold": DEFAULT_THRESHOLD,  # the predictor's default cut
        "mask_threshold": 0.5,
        # in the graph: boxes scoring below this never leave it, and at most max_dets per image
        "box_score_thresh": evaluation.get("score_threshold"),
        "max_dets": evaluation.get("max_dets"),
        "tiling": recipe.get("tiling"),  # the predictor tiles large images as the model was trained
        "input": {
            "min_size": spec.min_size,
            "max_size": spec.max_size,
            "resize": "keep_ratio" if spec.keep_ratio else "stretch",
            "size_rounding": spec.size_rounding,
            "resize_order": spec.resize_order,
            "normalisation": spec.normalisation,
        },
        "preprocess": {
            "color": "RGB",
            "scale": "1/255",
            "mean": list(spec.mean),
            "std": list(spec.std),
            "normalise": normalise_description(spec),
            "resize": resize_description(spec),
            "size_divisible": spec.size_divisible,
            "pad": pad_description(spec),
            "pad_to_square": spec.pad_to_square,
            "pad_value": spec.pad_value,
        },
        "graph": graph,
        "precision": precision,
        "int8": bool(int8),
        **extra,
    }
