"""The arithmetic of the recipe resize: its scale, and the size it makes of a picture.

Shared by the training data pipeline (`instaseg.data.transforms`), the architectures' input spec
(`instaseg.models.detector.InputSpec`, which the pre-processing of every backend follows) and the eager model's own
transform (`instaseg.models.canvas`), so that the three cannot drift apart.

How a side's length is made an integer is each architecture's reference's choice (``size_rounding``):

- ``floor``: torchvision's ``GeneralizedRCNNTransform`` (``interpolate`` with ``recompute_scale_factor``) floors
  ``side x scale``, so ``187 x (256 / 187)`` = 255.99999999999997 gives 255;
- ``round``: MMDetection's ``Resize(keep_ratio=True)`` (``mmcv.rescale_size``) and PaddleDetection's ``Resize``
  take ``int(side x scale + 0.5)``: half up, which is not Python's ``round`` (half to even).
"""

from __future__ import annotations

import math

SIZE_ROUNDINGS = ("floor", "round")


def resize_scale(h: int, w: int, min_size: float, max_size: float) -> float:
    """torchvision's detection resize rule: shorter side to ``min_size`` unless the longer would pass ``max_size``."""
    return min(min_size / min(h, w), max_size / max(h, w))


def scaled_side(length: int, scale: float, rounding: str) -> int:
    """One side of a picture resized by ``scale``, made an integer by ``rounding`` (see the module notes); at
    least one pixel."""
    exact = float(length) * scale  # in double, as torch computes interpolate's output size
    if rounding == "floor":
        return max(1, math.floor(exact))
    if rounding == "round":
        return max(1, int(exact + 0.5))
    raise ValueError(f"size rounding must be one of {SIZE_ROUNDINGS}, got {rounding!r}")


def resized_size(
    h: int, w: int, min_size: float, max_size: float, keep_ratio: bool = True, rounding: str = "round"
) -> tuple[int, int]:
    """Output (height, width) of the recipe resize, each side made an integer by ``rounding``. Without
    ``keep_ratio`` (``input.resize: stretch``) every image becomes a ``max_size`` square."""
    if not keep_ratio:
        return int(max_size), int(max_size)
    scale = resize_scale(h, w, min_size, max_size)
    return scaled_side(h, scale, rounding), scaled_side(w, scale, rounding)
