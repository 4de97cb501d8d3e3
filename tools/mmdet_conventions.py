"""MMDetection 3.3's pre- and post-processing where ours differs: the differences K1-K3 of docs/equivalence.md
(K1 and K3 are model options since D14 and D15, ``mask_resample: canvas_rescale`` / ``two_step``, which
tests/test_mask_resample.py checks against `canvas_masks` and `two_step_masks`; our own recipes keep "direct").

Plain torch and OpenCV, no MMDetection import, so that both tools/mmdet_equivalence.py (in the reference
environment, against MMDetection itself) and tools/mmdet_kept_differences.py (in ours, on trained checkpoints) use
the same code:

- K1 `canvas_masks`: RTMDet-Ins ``predict_by_feat(rescale=True)``: the whole padded canvas of mask logits upsampled
  by the stride, resized to ``ceil(canvas * (1 / scale))`` with the width's scale factor applied to the height and
  the height's to the width, then cut to the original size;
- K2 `opencv_resized`: ``mmcv.imrescale``'s resize of the uint8 picture (``cv2.INTER_LINEAR``, rounded back to
  uint8), which MMDetection's pipeline does before normalising (the published RTMDet-Ins recipes now do too:
  ``resize_order: uint8_bilinear``), to `rescaled_size` (rounded half up, as our RTMDet-Ins and SOLOv2 now size
  pictures too: ``InputSpec.size_rounding``; torchvision's ``interpolate`` floors);
- K3 `two_step_masks`: SOLOv2 ``_predict_by_feat_single``: stride-4 probabilities upsampled x4 to the padded input,
  cut to the resized picture, then resized to the original.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from instaseg.utils import resize_rule


def rescaled_size(height: int, width: int, short_edge: float, long_edge: float) -> tuple[int, int]:
    """``mmcv.rescale_size`` with ``keep_ratio``: the scale that fits both edges, each side rounded (h, w)."""
    scale = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * float(scale) + 0.5), int(width * float(scale) + 0.5)


def opencv_resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """K2: an HxWx3 uint8 picture resized to ``size`` (h, w) as MMDetection's ``Resize`` does it (mmcv's "bilinear"
    is ``cv2.INTER_LINEAR``; OpenCV computes uint8 in fixed point and rounds): ``resize_order: uint8_bilinear``."""
    return resize_rule.opencv_resized(image, size, "uint8_bilinear")


def canvas_masks(
    logits: torch.Tensor, stride: int, scale_factor: tuple[float, float], original: tuple[int, int]
) -> torch.Tensor:
    """K1: [N,h,w] mask logits over the whole padded canvas at ``stride`` -> [N,h0,w0] bool masks with the geometry
    of RTMDet-Ins' ``rescale``. ``scale_factor``: MMDetection's (w_scale, h_scale), resized over original size.
    Its code multiplies the height by ``1 / scale_factor[0]`` and the width by ``1 / scale_factor[1]``."""
    h0, w0 = original
    sx, sy = scale_factor
    up = F.interpolate(logits[None].float(), scale_factor=stride, mode="bilinear", align_corners=False)
    shape = [math.ceil(up.shape[-2] * (1 / sx)), math.ceil(up.shape[-1] * (1 / sy))]
    return F.interpolate(up, size=shape, mode="bilinear", align_corners=False)[0, :, :h0, :w0] > 0


def two_step_masks(
    probabilities: torch.Tensor, stride: int, resized: tuple[int, int], original: tuple[int, int], threshold: float
) -> torch.Tensor:
    """K3: [N,h,w] mask probabilities over the padded input at ``stride`` -> [N,h0,w0] bool masks as SOLOv2's
    ``_predict_by_feat_single`` makes them: upsampled to the padded input, cut to the ``resized`` picture (h, w),
    resized to the ``original`` (h0, w0), above ``threshold``."""
    h, w = resized
    padded = (probabilities.shape[-2] * stride, probabilities.shape[-1] * stride)
    up = F.interpolate(probabilities[None].float(), size=padded, mode="bilinear", align_corners=False)[..., :h, :w]
    return F.interpolate(up, size=original, mode="bilinear", align_corners=False)[0] > threshold
