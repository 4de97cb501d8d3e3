"""The arithmetic of the recipe resize: its scale, and the size it makes of a picture.

Shared by the training data pipeline (`instaseg.data.transforms`), the architectures' input spec
(`instaseg.models.detector.InputSpec`, which the pre-processing of every backend follows) and the eager model's own
transform (`instaseg.models.canvas`), so that the three cannot drift apart.

How a side's length is made an integer is each architecture's reference's choice (``size_rounding``):

- ``floor``: torchvision's ``GeneralizedRCNNTransform`` (``interpolate`` with ``recompute_scale_factor``) floors
  ``side x scale``, so ``187 x (256 / 187)`` = 255.99999999999997 gives 255;
- ``round``: MMDetection's ``Resize(keep_ratio=True)`` (``mmcv.rescale_size``) and PaddleDetection's ``Resize``
  take ``int(side x scale + 0.5)``: half up, which is not Python's ``round`` (half to even).

In what order the picture is resized and normalised is also the reference's choice (``resize_order``):

- ``float``: torchvision's order: the picture normalised to float, then resized bilinearly in float;
- ``uint8_bilinear`` / ``uint8_bicubic``: the uint8 picture resized by OpenCV (``cv2.resize``, ``INTER_LINEAR`` /
  ``INTER_CUBIC``: fixed-point arithmetic, rounded back to uint8), then normalised: MMDetection's ``Resize``
  (``mmcv.imresize``, cv2 backend, 'bilinear') and PaddleDetection's ``Resize`` (``interp: 1`` or ``2``). A
  float picture that is resized takes this order on the uint8 grid: each value rounded to the nearest of the 256
  levels first (exact for a uint8 picture divided by 255); one already at its size is normalised as it is;
- ``float_opencv_bilinear``: the picture normalised to float32 first, then resized by ``cv2.resize``
  (``INTER_LINEAR``) in float: PaddleDetection's SOLOv2 EvalReader (``NormalizeImage`` before ``Resize`` with
  ``interp: 1``). OpenCV's float bilinear weights are not torch's: the ``float`` order differs from it by up to
  about 2e-4 (normalised units) on COCO pictures at 800 px, this order by nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SIZE_ROUNDINGS = ("floor", "round")
RESIZE_ORDERS = ("float", "uint8_bilinear", "uint8_bicubic", "float_opencv_bilinear")
FLOAT_ORDERS = ("float", "float_opencv_bilinear")  # normalise first, then resize


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


# cv2.INTER_LINEAR / INTER_CUBIC as numbers: cv2 is imported only where a picture is resized by it
OPENCV_INTERPOLATIONS = {"uint8_bilinear": 1, "uint8_bicubic": 2, "float_opencv_bilinear": 1}


def check_resize_order(order: str) -> None:
    if order not in RESIZE_ORDERS:
        raise ValueError(f"resize order must be one of {RESIZE_ORDERS}, got {order!r}")


def opencv_resized(picture: np.ndarray, size: tuple[int, int], order: str) -> np.ndarray:
    """An HxWx3 ``picture`` (uint8 for a ``uint8_*`` order, float32 for ``float_opencv_bilinear``) resized to
    ``size`` (h, w) by ``cv2.resize`` with the interpolation ``order`` names, as the references call it: the
    output size given, so OpenCV maps pixels by input over output size (PaddleDetection passes the scale factors
    ``new / old`` instead: the same mapping, equal bit for bit on the pictures checked)."""
    import cv2  # imported here: exported-model users of the float order never need it

    interpolation = OPENCV_INTERPOLATIONS.get(order)
    if interpolation is None:
        raise ValueError(f"an OpenCV resize order is one of {tuple(OPENCV_INTERPOLATIONS)}, got {order!r}")
    return cv2.resize(np.ascontiguousarray(picture), (int(size[1]), int(size[0])), interpolation=interpolation)


def opencv_resized_float(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A normalised [3,H,W] float32 picture resized to ``size`` (h, w) by ``cv2.resize`` ``INTER_LINEAR`` (the
    ``float_opencv_bilinear`` order), on ``image``'s device."""
    picture = image.detach().float().permute(1, 2, 0).cpu().numpy()
    resized = opencv_resized(picture, size, "float_opencv_bilinear")
    return torch.from_numpy(resized.reshape(*size, -1)).permute(2, 0, 1).to(image.device)


def uint8_picture(image: torch.Tensor) -> np.ndarray:
    """A [3,H,W] float picture on [0, 1] as the HxWx3 uint8 array of its nearest grey levels (a picture that came
    from uint8, divided by 255, gets its own values back exactly)."""
    levels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return levels.permute(1, 2, 0).cpu().numpy()
