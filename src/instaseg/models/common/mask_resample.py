"""How image-frame masks (``Detector.mask_stride``) are resampled to the original picture: ``mask_resample``.

- "direct": one bilinear step from the low-res map straight to the original pixels, each output pixel centre
  mapped exactly through the resize (`instaseg.inference.postprocess.paste_image_mask`, `paste_image_masks`);
- "canvas_rescale": MMDetection's RTMDet-Ins ``predict_by_feat(rescale=True)``: the whole padded canvas upsampled
  by the stride (``F.interpolate(scale_factor=stride)``), resized to ``ceil(canvas * (1 / scale))`` with the
  width's scale factor (resized / original width) applied to the height and the height's to the width, then the
  original size cut from its top-left corner (rows or columns beyond that resize are background);
- "two_step": MMDetection's SOLOv2 ``_predict_by_feat_single``: upsampled to the padded input (``size=`` the
  low-res size x stride), the resized picture cut out, then resized to the original. A mask cut to its box
  (``mask_box_crop``) is cut between the two steps, at the input pixels c with x1 <= c < x2 of its box in the
  input frame: PaddleDetection's PP-YOLOE-seg ``process_mask_upsample`` (its ``crop_mask``) then ``rescale``.

Both reference geometries are separable and linear: per axis, two bilinear steps, each an [n_out, n_in] matrix
with at most two weights per row, so their product is a band matrix whose rows still sum to one. A mask is then
``rows @ window @ cols.T`` on the window of low-res pixels its output pixels read, so pasting costs the window, as
the direct paste does. The coordinates are PyTorch's (``align_corners=False``) as its kernel computes them, in
float32: ``scale = 1 / scale_factor`` or ``in / out``, source ``max(scale * (dst + 0.5) - 0.5, 0)`` as one fused
multiply-add (what its AVX2/AVX-512 CPU kernels compile to; rounding the product first instead moves a source
coordinate by up to 6e-5 of a pixel, and a steep logit by 1e-4), the upper neighbour clamped to the last pixel.
The composed weights are products of the two steps' float32 weights (in float64), so a value differs from the
reference's two rounded steps by float rounding only (about 1e-6 on logits of a few units).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

MASK_RESAMPLES = ("direct", "canvas_rescale", "two_step")


class Step(NamedTuple):
    """One bilinear resize along an axis: ``n_in`` pixels to ``n_out``, output pixel d sampling ``scale * (d + 0.5)
    - 0.5`` (PyTorch's float32 ``scale``)."""

    n_in: int
    n_out: int
    scale: np.float32


class AxisResample(NamedTuple):
    """An axis' steps from the low-res map to the original picture, and how many original pixels they reach."""

    steps: tuple[Step, ...]
    extent: int


def sized_step(n_in: int, n_out: int) -> Step:
    """``F.interpolate(size=...)``: the scale is ``in / out`` in float32."""
    return Step(n_in, n_out, np.float32(n_in) / np.float32(n_out))


def axis_resample(
    mode: str, axis: int, stride: int, low_size: int, input_size: tuple[int, int], image_size: tuple[int, int]
) -> AxisResample:
    """The steps of ``mode`` ("canvas_rescale" or "two_step") along ``axis`` (0: rows, 1: columns) of a low-res map
    ``low_size`` long at ``stride``, for a picture of ``image_size`` (h, w) resized to ``input_size``."""
    up = low_size * stride
    if mode == "canvas_rescale":
        other = 1 - axis  # MMDetection's scale_factor is (w, h) and its height is scaled by scale_factor[0]
        factor = input_size[other] / image_size[other]
        out = math.ceil(up * (1 / factor))
        steps = (Step(low_size, up, np.float32(1.0 / stride)), sized_step(up, out))
        return AxisResample(steps, min(out, image_size[axis]))
    if mode == "two_step":
        steps = (sized_step(low_size, up), sized_step(input_size[axis], image_size[axis]))
        return AxisResample(steps, image_size[axis])
    raise ValueError(f"mask_resample must be one of {MASK_RESAMPLES[1:]} here, got {mode!r}")


def step_indices(step: Step, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output pixels ``start .. start + n - 1`` of ``step``: (lower input index, upper input index, upper weight),
    as PyTorch's ``upsample_bilinear2d`` computes them (float32)."""
    centres = np.arange(start, start + n, dtype=np.float64) + 0.5  # exact, as float32 holds them
    # one rounding to float32 of an exact product and difference: the fused multiply-add PyTorch's kernel compiles to
    src = np.maximum((np.float64(step.scale) * centres - 0.5).astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(src).astype(np.int64), step.n_in - 1)
    weight = np.clip(src - low.astype(np.float32), np.float32(0), np.float32(1))
    high = np.where(low < step.n_in - 1, low + 1, low)
    return low, high, weight


def step_weights(step: Step, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Output pixels ``start .. start + n - 1`` of ``step``: (lower input index, upper input index, and their float64
    weights), the whole weight on the lower one where both are the last input pixel."""
    low, high, weight = step_indices(step, start, n)
    single = high == low
    upper = weight.astype(np.float64)
    to_low = (np.float32(1) - weight).astype(np.float64) + np.where(single, upper, 0.0)
    return low, high, to_low, np.where(single, 0.0, upper)


def step_band(step: Step, start: int, n: int) -> tuple[np.ndarray, int]:
    """([n, k] float64 weights of ``step``'s outputs ``start ..`` over the k inputs they read, the first of them)."""
    low, high, to_low, to_high = step_weights(step, start, n)
    first = int(low[0])
    band = np.zeros((n, int(high[-1]) - first + 1), dtype=np.float64)
    rows = np.arange(n)
    band[rows, low - first] = to_low
    band[rows, high - first] += to_high
    return band, first


def band_weights(
    axis: AxisResample, start: int, n: int, cut: tuple[float, float] | None = None
) -> tuple[np.ndarray, int]:
    """([n, k] float32 weights of output pixels ``start .. start + n - 1`` over the k low-res pixels they read, the
    first of those): the steps' bands multiplied, the last step first. ``n`` >= 1. ``cut``: the intermediate map
    the last step reads (the input frame) kept only at pixels c with ``cut[0] <= c < cut[1]``."""
    low, high, to_low, to_high = step_weights(axis.steps[-1], start, n)
    if cut is not None:
        to_low[(low < cut[0]) | (low >= cut[1])] = 0.0
        to_high[(high < cut[0]) | (high >= cut[1])] = 0.0
    first, reads = int(low[0]), int(high[-1]) - int(low[0]) + 1
    before = axis.steps[:-1]
    if before:
        mid_low, mid_high, mid_to_low, mid_to_high = step_weights(before[-1], first, reads)
    else:  # one step: the band before is the identity
        mid_low = mid_high = np.arange(first, first + reads)
        mid_to_low, mid_to_high = np.ones(reads), np.zeros(reads)
    # the product of the last step's band (two weights a row) with the one before (two a row), entry by entry: an
    # entry sums at most one product through each of the two inputs its output reads, and a product of two float32
    # weights (all of them but the merged ones at a last pixel) is exact in float64, so the sum rounds once as in
    # the matrix product, in any order, at a fraction of its cost
    first_low = int(mid_low[0])
    weights = np.zeros((n, int(mid_high[-1]) - first_low + 1), dtype=np.float64)
    rows = np.arange(n)
    for index, share in ((low - first, to_low), (high - first, to_high)):
        for column, part in ((mid_low, mid_to_low), (mid_high, mid_to_high)):
            weights[rows, column[index] - first_low] += share * part[index]
    for step in reversed(before[:-1]):
        band, first_low = step_band(step, first_low, weights.shape[1])
        weights = weights @ band
    return weights.astype(np.float32), first_low


def axis_support(axis: AxisResample) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel 0 .. extent - 1: the lowest and highest low-res index its weights can touch (both
    non-decreasing along the axis)."""
    low, high, _ = step_indices(axis.steps[-1], 0, axis.extent)
    for step in reversed(axis.steps[:-1]):
        step_low, step_high, _ = step_indices(step, 0, step.n_out)
        low, high = step_low[low], step_high[high]
    return low, high


class ImageMaskResample:
    """A reference geometry for one picture: ``mode`` for low-res maps of ``low_shape`` (h, w) at ``stride``, the
    picture ``image_size`` resized to ``input_size``. Each axis' weights are composed once per picture (a [extent,
    low-res size] float32 matrix: a few hundred KB); a paste then slices the rows and low-res pixels of its window."""

    def __init__(
        self,
        mode: str,
        stride: int,
        low_shape: tuple[int, int],
        input_size: tuple[int, int],
        image_size: tuple[int, int],
    ):
        self.axes = [axis_resample(mode, a, stride, int(low_shape[a]), input_size, image_size) for a in (0, 1)]
        self.supports = [axis_support(axis) for axis in self.axes]
        self.matrices = [_placed(axis, 0, axis.extent) for axis in self.axes]
        # the last step's own supports: which intermediate (input-frame) pixels each output pixel reads
        self.last = [step_indices(axis.steps[-1], 0, axis.extent)[:2] for axis in self.axes]

    def dense(self, axis: int) -> np.ndarray:
        """The [extent, low-res size] float32 matrix of ``axis`` (0: rows, 1: columns), for a whole-picture paste."""
        return self.matrices[axis]

    def _band(self, axis: int, start: int, stop: int) -> tuple[np.ndarray, int]:
        low, high = self.supports[axis]
        first = int(low[start])
        return self.matrices[axis][start:stop, first : int(high[stop - 1]) + 1], first

    def paste(self, mask: np.ndarray, window: np.ndarray, threshold: float) -> tuple[np.ndarray, int, int]:
        """The mask's output pixels inside ``window`` (xyxy, original pixels, widened to whole pixels and cut to
        what the geometry reaches) above ``threshold``: (bool crop, x0, y0)."""
        x0, y0 = max(int(np.floor(window[0])), 0), max(int(np.floor(window[1])), 0)
        x1, y1 = min(int(np.ceil(window[2])), self.axes[1].extent), min(int(np.ceil(window[3])), self.axes[0].extent)
        return _window_paste(mask, (y0, y1), (x0, x1), self._band, threshold)

    def cut_reach(self, axis: int, cut: tuple[float, float]) -> tuple[int, int]:
        """The output pixels [start, stop) of ``axis`` that read an intermediate pixel c with ``cut[0] <= c <
        cut[1]`` (empty when no pixel lies in the cut)."""
        lo, hi = math.ceil(cut[0]), math.ceil(cut[1])  # integer c >= x1 and c < x2
        if hi <= lo:
            return 0, 0
        return _reach(np.array([lo, hi - 1]), *self.last[axis])

    def paste_cut(self, mask: np.ndarray, box: np.ndarray, threshold: float) -> tuple[np.ndarray, int, int]:
        """The mask cut between the two steps to its ``box`` (xyxy, input pixels): (bool crop, x0, y0) over the
        output pixels the cut reaches. The values are probabilities (zero is background)."""
        cuts = ((box[1], box[3]), (box[0], box[2]))

        def band(axis: int, start: int, stop: int) -> tuple[np.ndarray, int]:
            return band_weights(self.axes[axis], start, stop - start, cuts[axis])

        return _window_paste(mask, self.cut_reach(0, cuts[0]), self.cut_reach(1, cuts[1]), band, threshold)

    def dense_cut(self, axis: int, cut: tuple[float, float]) -> np.ndarray:
        """The [extent, low-res size] float32 matrix of ``axis`` with the intermediate cut (`band_weights`)."""
        return _placed(self.axes[axis], *self.cut_reach(axis, cut), cut)

    def extents(self, masks: np.ndarray, threshold: float) -> np.ndarray:
        """[N,4] xyxy windows holding every output pixel where each mask [N,h,w] can exceed ``threshold``: a
        resampled value is a convex combination of the low-res values its weights touch, so it passes only where
        those touch a passing one. Empty windows for masks where nothing passes."""
        above = masks > threshold
        out = np.zeros((len(masks), 4), dtype=np.float32)
        (row_low, row_high), (col_low, col_high) = self.supports
        for i, (rows, cols) in enumerate(zip(above.any(axis=2), above.any(axis=1), strict=True)):
            if not rows.any():
                continue
            y0, y1 = _reach(np.flatnonzero(rows), row_low, row_high)
            x0, x1 = _reach(np.flatnonzero(cols), col_low, col_high)
            if y1 > y0 and x1 > x0:
                out[i] = (x0, y0, x1, y1)
        return out


def _placed(axis: AxisResample, start: int, stop: int, cut: tuple[float, float] | None = None) -> np.ndarray:
    """The [extent, low-res size] float32 matrix of ``axis`` holding the weights (`band_weights`) of its output
    pixels [start, stop), zero elsewhere."""
    full = np.zeros((axis.extent, axis.steps[0].n_in), dtype=np.float32)
    if stop > start:
        weights, first = band_weights(axis, start, stop - start, cut)
        full[start:stop, first : first + weights.shape[1]] = weights
    return full


def _window_paste(
    mask: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    band: Callable[[int, int, int], tuple[np.ndarray, int]],
    threshold: float,
) -> tuple[np.ndarray, int, int]:
    """The mask's output pixels in rows [y0, y1) and columns [x0, x1) above ``threshold``: (bool crop, x0, y0), the
    weights of each axis' span given by ``band(axis, start, stop)`` -> (weights, first low-res pixel)."""
    (y0, y1), (x0, x1) = rows, cols
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), 0, 0
    row_weights, top = band(0, y0, y1)
    col_weights, left = band(1, x0, x1)
    low = mask[top : top + row_weights.shape[1], left : left + col_weights.shape[1]].astype(np.float32, copy=False)
    return row_weights @ low @ col_weights.T > threshold, x0, y0


def _reach(hits: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[int, int]:
    """The output pixels [start, stop) whose support (``low``..``high``, non-decreasing) reaches from the first to
    the last of the low-res indices ``hits``: a superset of those touching one of them."""
    start = int(np.searchsorted(high, hits[0], side="left"))
    stop = int(np.searchsorted(low, hits[-1], side="right"))
    return start, stop
