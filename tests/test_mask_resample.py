"""Image-frame masks resampled to the original picture as MMDetection resamples them (``mask_resample``,
`instaseg.models.common.mask_resample`): the predictor's per-window paste and the eager model's whole-picture paste
against the reference code of tools/mmdet_conventions.py (K1 `canvas_masks`, K3 `two_step_masks` of
docs/equivalence.md), the default "direct" left as it was, and the option's way through recipes and exports.

Where ours and the reference may differ: a pixel whose value lies within ``NEAR`` of the threshold. The reference
rounds each of its two bilinear steps to float32, ours multiplies the composed weights once: the values differ by
about 1e-6 on these logits (measured: at most 1.7e-6), so only a pixel that close to the threshold can fall on the
other side; such pixels are counted and must stay rare."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from instaseg.errors import UserError
from instaseg.inference.postprocess import RawDetections, paste_image_mask, postprocess
from instaseg.models.common.mask_resample import MASK_RESAMPLES, ImageMaskResample
from instaseg.models.common.masks import paste_image_masks
from instaseg.models.metadata import graph_from_metadata
from instaseg.models.recipes import apply_overrides, load_recipe

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from mmdet_conventions import canvas_masks, rescaled_size, two_step_masks  # noqa: E402

NEAR = 1e-5
# (original h0 x w0, network size): pictures enlarged and shrunk by non-integer factors; 230 x 352 is
# 000000037777.jpg (x1.818 to 418 x 640), whose two scale factors differ most; 100 x 371 is one whose reference
# canvas resize ends a column short of the picture (ceil(640 / (640 / 371)) = 370)
K1_CASES = [((230, 352), 640), ((352, 230), 640), ((500, 333), 640), ((900, 1203), 640), ((100, 371), 640),
            ((187, 212), 256), ((61, 45), 96)]  # fmt: skip
K3_CASES = [((230, 352), (800, 1333)), ((427, 640), (800, 1333)), ((1200, 950), (800, 1333)), ((53, 71), (64, 96))]


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _maps(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Low-res logits: noise of a few units over half the maps, blobs (a few low-res pixels across, most of the
    map far below the threshold) over the others, so the windows a mask's extent gives are small and are tested."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        if i % 2:
            out.append(rng.normal(0, 3, shape))
        else:
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 5)
            out.append(1.5 * (r - np.hypot(ys - cy, xs - cx)) + rng.normal(0, 0.3, shape))
    return np.stack(out).astype(np.float32)


def _predicted(maps: np.ndarray, mode: str, stride: int, size, image, logits: bool, threshold: float) -> np.ndarray:
    boxes = np.tile(np.array([[0, 0, size[1], size[0]]], np.float32), (len(maps), 1))  # unused: masks are uncut
    raw = RawDetections(boxes, np.ones(len(maps), np.float32), np.ones(len(maps), np.int64), maps,
                        mask_stride=stride, mask_logits=logits, mask_box_crop=False, mask_resample=mode)  # fmt: skip
    return np.stack([_decode(r) for r in postprocess(raw, size, image, mask_threshold=threshold).rles])


def _values(maps: np.ndarray, mode: str, stride: int, size, image) -> np.ndarray:
    """Our resampled values in float64 over the whole picture (pixels the geometry does not reach: -inf)."""
    geometry = ImageMaskResample(mode, stride, maps.shape[1:], size, image)
    rows, cols = (geometry.dense(axis).astype(np.float64) for axis in (0, 1))
    full = np.full((len(maps), *image), -np.inf)
    full[:, : rows.shape[0], : cols.shape[0]] = rows @ maps.astype(np.float64) @ cols.T
    return full


def _assert_same_but_near(ours: np.ndarray, reference: np.ndarray, values: np.ndarray, threshold: float) -> None:
    differ = ours != reference
    assert np.all(np.abs(values[differ] - threshold) < NEAR), np.abs(values[differ] - threshold).max()
    assert differ.sum() <= 3, differ.sum()


def _full(masks: torch.Tensor, image: tuple[int, int]) -> np.ndarray:
    """A reference mask stack at the picture's size (the canvas resize may end short of it: background there)."""
    out = np.zeros((masks.shape[0], *image), dtype=bool)
    out[:, : masks.shape[1], : masks.shape[2]] = masks.numpy()
    return out


@pytest.mark.parametrize(("image", "side"), K1_CASES)
def test_canvas_rescale_is_the_reference_rtmdet_rescale(image, side):
    size = rescaled_size(*image, side, side)
    low = (side // 8, side // 8)  # the padded max_size square at stride 8
    logits = _maps(12, low, seed=sum(image))
    reference = _full(canvas_masks(torch.from_numpy(logits), 8, (size[1] / image[1], size[0] / image[0]), image), image)
    ours = _predicted(logits, "canvas_rescale", 8, size, image, logits=True, threshold=0.5)
    assert reference.any() and (~reference).any()
    _assert_same_but_near(ours, reference, _values(logits, "canvas_rescale", 8, size, image), 0.0)


@pytest.mark.parametrize(("image", "sides"), K3_CASES)
def test_two_step_is_the_reference_solov2_resampling(image, sides):
    size = rescaled_size(*image, *sides)
    low = (-(-size[0] // 32) * 8, -(-size[1] // 32) * 8)  # the input padded to a multiple of 32, at stride 4
    probabilities = torch.from_numpy(_maps(8, low, seed=sum(image))).sigmoid().numpy()
    for threshold in (0.5, 0.3):
        reference = two_step_masks(torch.from_numpy(probabilities), 4, size, image, threshold).numpy()
        ours = _predicted(probabilities, "two_step", 4, size, image, logits=False, threshold=threshold)
        assert reference.any() and (~reference).any()
        _assert_same_but_near(ours, reference, _values(probabilities, "two_step", 4, size, image), threshold)


@pytest.mark.parametrize(("image", "mode"), [((230, 352), "canvas_rescale"), ((100, 371), "canvas_rescale"),
                                             ((230, 352), "two_step"), ((1200, 950), "two_step")])  # fmt: skip
def test_the_composed_weights_are_pytorchs_two_steps(image, mode):
    """Values, not just masks: within float rounding of the reference's two float32 steps. PyTorch computes a
    source coordinate with one fused multiply-add; rounding its product first would put these 1e-4 apart."""
    size = rescaled_size(*image, 640, 640)
    low = (80, 80) if mode == "canvas_rescale" else (-(-size[0] // 32) * 8, -(-size[1] // 32) * 8)
    stride = 8 if mode == "canvas_rescale" else 4
    maps = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (2, *low)).astype(np.float32))
    if mode == "canvas_rescale":
        up = F.interpolate(maps[None], scale_factor=stride, mode="bilinear", align_corners=False)
        out = [math.ceil(640 * (1 / (size[1] / image[1]))), math.ceil(640 * (1 / (size[0] / image[0])))]
        want = F.interpolate(up, size=out, mode="bilinear", align_corners=False)[0, :, : image[0], : image[1]]
    else:
        up = F.interpolate(maps[None], size=(low[0] * 4, low[1] * 4), mode="bilinear", align_corners=False)
        want = F.interpolate(up[..., : size[0], : size[1]], size=image, mode="bilinear", align_corners=False)[0]
    values = _values(maps.numpy(), mode, stride, size, image)[:, : want.shape[1], : want.shape[2]]
    assert np.abs(values - want.double().numpy()).max() < 1e-5


@pytest.mark.parametrize("mode", ["canvas_rescale", "two_step"])
def test_extents_hold_every_pixel_that_passes_and_stay_small(mode):
    size, image, stride = (418, 640), (230, 352), 8
    logits = _maps(16, (80, 80), seed=5)[::2]  # the blobs
    geometry = ImageMaskResample(mode, stride, logits.shape[1:], size, image)
    windows = geometry.extents(logits, 0.0)
    passing = _values(logits, mode, stride, size, image) > 0.0
    for window, mask in zip(windows, passing, strict=True):
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert window[0] <= xs.min() and window[1] <= ys.min() and xs.max() < window[2] and ys.max() < window[3]
    areas = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    assert areas.max() < 0.2 * image[0] * image[1]  # a blob's window, not the picture


@pytest.mark.parametrize(("mode", "stride", "logits"), [("canvas_rescale", 8, True), ("two_step", 4, False)])
def test_the_eager_paste_is_the_predictors(mode, stride, logits):
    size, image = (418, 640), (230, 352)
    maps = _maps(10, (80 * 8 // stride, 80 * 8 // stride), seed=3)
    maps = maps if logits else torch.from_numpy(maps).sigmoid().numpy()
    eager = paste_image_masks(torch.from_numpy(maps), torch.zeros(len(maps), 4), stride, size, image, crop=False,
                              logits=logits, resample=mode)[:, 0]  # fmt: skip
    assert eager.shape == (len(maps), *image) and float(eager.min()) >= 0 and float(eager.max()) <= 1
    ours = _predicted(maps, mode, stride, size, image, logits=logits, threshold=0.5)
    threshold = 0.0 if logits else 0.5
    _assert_same_but_near((eager > 0.5).numpy(), ours, _values(maps, mode, stride, size, image), threshold)


def test_direct_stays_the_one_step_paste():
    """The default: every detector and export without the key resamples as before, window by window."""
    size, image = (418, 640), (230, 352)
    logits = _maps(6, (80, 80), seed=9)
    boxes = np.array([[10, 20, 300, 400], [0, 0, 640, 418], [5, 5, 6, 6]] * 2, np.float32)
    raw = RawDetections(boxes, np.ones(6, np.float32), np.ones(6, np.int64), logits, mask_stride=8, mask_logits=True)
    assert raw.mask_resample == "direct"
    got = [_decode(r) for r in postprocess(raw, size, image).rles]
    scaled = boxes * np.array([352 / 640, 230 / 418] * 2, np.float32)
    for mask, m, box in zip(got, logits, scaled, strict=True):
        crop, x0, y0 = paste_image_mask(m, box, 8, size, image, 0.0)
        want = np.zeros(image, bool)
        want[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        np.testing.assert_array_equal(mask, want)
    canvas = _predicted(logits, "canvas_rescale", 8, size, image, logits=True, threshold=0.5)
    direct = _predicted(logits, "direct", 8, size, image, logits=True, threshold=0.5)
    assert (canvas != direct).sum() > 100  # the geometries differ on this picture (K1)


def test_recipes_set_the_reference_geometry_and_unknown_values_are_refused():
    for name in ("rtmdet_ins_tiny", "rtmdet_ins_s", "rtmdet_ins_m", "rtmdet_ins_l", "rtmdet_ins_x"):
        assert load_recipe(name)["model"]["mask_resample"] == "canvas_rescale", name
    assert load_recipe("solov2_r50_fpn")["model"]["mask_resample"] == "two_step"
    assert load_recipe("ppyoloe_seg_s")["model"]["mask_resample"] == "two_step"  # PaddleDetection's, cut between
    for name in ("rtmdet_ins_tiny_fast", "solov2_fast", "ppyoloe_seg_fast"):
        assert load_recipe(name)["model"]["mask_resample"] == "direct", name
    with pytest.raises(UserError, match=r"model\.mask_resample must be one of direct, two_step"):
        apply_overrides(load_recipe("ppyoloe_seg_fast"), ["model.mask_resample=canvas_rescale"])
    for name in ("rtmdet_ins_tiny_fast", "solov2_fast"):
        with pytest.raises(UserError, match=r"model\.mask_resample must be one of direct, canvas_rescale, two_step"):
            apply_overrides(load_recipe(name), ["model.mask_resample=bicubic"])
    assert MASK_RESAMPLES[0] == "direct"


def test_export_metadata_reads_the_geometry_and_older_exports_as_direct():
    assert graph_from_metadata({"graph": {"mask_stride": 8}})["mask_resample"] == "direct"  # before the key
    assert graph_from_metadata({"graph": {"mask_resample": "two_step"}})["mask_resample"] == "two_step"
    with pytest.raises(UserError, match=r"model\.onnx.*mask_resample 'bilinear'") as error:
        graph_from_metadata({"graph": {"mask_resample": "bilinear"}}, "model.onnx")
    assert "\n" not in str(error.value)


def _paddle_cut_masks(probs: torch.Tensor, boxes: torch.Tensor, size, image) -> torch.Tensor:
    """PaddleDetection's PP-YOLOE-seg: ``process_mask_upsample`` (the stride-4 probabilities resized to the input,
    ``crop_mask`` keeping input pixels c with x1 <= c < x2 of each box), then ``rescale`` to the picture, > 0.5."""
    up = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    cols, rows = torch.arange(size[1], dtype=torch.float32), torch.arange(size[0], dtype=torch.float32)
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside_x = (cols[None, None] >= x1) & (cols[None, None] < x2)
    inside = inside_x & (rows[None, :, None] >= y1) & (rows[None, :, None] < y2)
    return F.interpolate((up * inside)[None], size=image, mode="bilinear", align_corners=False)[0] > 0.5


@pytest.mark.parametrize(("image", "side"), [((427, 640), 640), ((230, 352), 640), ((61, 45), 96), ((96, 200), 96)])
def test_two_step_cut_at_the_box_between_the_steps_is_paddledetections(image, side):
    """A mask cut to its box (``mask_box_crop``) with ``two_step`` is cut between the steps at the box's input
    pixels, as PaddleDetection's PP-YOLOE-seg makes its masks: the predictor's per-box paste and the eager model's
    equal that, up to pixels within float rounding of the threshold."""
    from instaseg.models.common.masks import box_cropped_output
    from instaseg.models.detector import RawOutput

    size = (side, side)  # PP-YOLOE_seg-S stretches the picture to a square
    rng = np.random.default_rng(side + image[0])
    probs = torch.from_numpy(_maps(6, (side // 4, side // 4), seed=image[1])).sigmoid()
    corners = np.sort(rng.uniform(-0.1 * side, 1.1 * side, (6, 2, 2)), axis=1)  # some reach past the input
    boxes = torch.from_numpy(corners.transpose(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]].astype(np.float32))
    boxes = boxes.clamp(0, side)  # the contract's boxes are clipped to the input
    reference = _paddle_cut_masks(probs, boxes, size, image).numpy()
    raw = RawDetections(boxes.numpy(), np.ones(6, np.float32), np.ones(6, np.int64), probs.numpy(), mask_stride=4,
                        mask_box_crop=True, mask_resample="two_step")  # fmt: skip
    ours = np.stack([_decode(r) for r in postprocess(raw, size, image).rles])
    geometry = ImageMaskResample("two_step", 4, probs.shape[1:], size, image)
    values = np.stack([
        geometry.dense_cut(0, (b[1], b[3])).astype(np.float64) @ p.double().numpy()
        @ geometry.dense_cut(1, (b[0], b[2])).astype(np.float64).T
        for p, b in zip(probs, boxes.tolist(), strict=True)
    ])  # fmt: skip
    assert reference.any() and (~reference).any()
    _assert_same_but_near(ours, reference, values, 0.5)
    out = RawOutput(boxes, torch.ones(6), torch.ones(6, dtype=torch.long), probs)
    eager = box_cropped_output(out, 4, size, image, crop=True, resample="two_step")["masks"][:, 0].numpy()
    _assert_same_but_near(eager > 0.5, reference, values, 0.5)


def test_paste_image_masks_cuts_a_reference_geometry_between_the_steps_at_the_input_boxes():
    """The eager paste itself cuts a two-step mask at its input-frame box (what the predictor's paste_cut keeps),
    not at its box in the picture; it needs those boxes and probabilities."""
    size, image = (96, 96), (61, 45)
    probs = torch.from_numpy(_maps(4, (24, 24), seed=11)).sigmoid()
    input_boxes = torch.tensor([[10.0, 5, 60, 40], [0, 0, 96, 96], [30.5, 20.2, 31.0, 20.9], [50, 60, 90, 95]])
    boxes = input_boxes * torch.tensor([45 / 96, 61 / 96] * 2)
    cut = paste_image_masks(probs, boxes, 4, size, image, resample="two_step", input_boxes=input_boxes)[:, 0]
    geometry = ImageMaskResample("two_step", 4, probs.shape[1:], size, image)
    for mask, p, box in zip(cut.numpy(), probs.numpy(), input_boxes.numpy(), strict=True):
        want = np.zeros(image, bool)
        crop, x0, y0 = geometry.paste_cut(p, box, 0.5)
        want[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        values = geometry.dense_cut(0, (box[1], box[3])) @ p @ geometry.dense_cut(1, (box[0], box[2])).T
        _assert_same_but_near(mask > 0.5, want, values, 0.5)
    whole = paste_image_masks(probs, boxes, 4, size, image, crop=False, resample="two_step")[:, 0]
    assert ((whole > 0.5) & ~(cut > 0.5)).any()  # the cut removes what lies outside the boxes
    with pytest.raises(ValueError, match="input frame"):
        paste_image_masks(probs, boxes, 4, size, image, resample="two_step")
    with pytest.raises(ValueError, match="probabilities"):
        paste_image_masks(probs.logit(), boxes, 4, size, image, logits=True, resample="two_step", input_boxes=boxes)
