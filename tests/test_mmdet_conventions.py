"""MMDetection's pre- and post-processing choices (tools/mmdet_conventions.py, the kept differences K1-K3 of
docs/equivalence.md) on synthetic inputs: their geometry, and how far each is from ours."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from instaseg.inference.postprocess import paste_image_mask
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import InputSpec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from mmdet_conventions import canvas_masks, opencv_resized, rescaled_size, two_step_masks  # noqa: E402


def test_opencv_resize_is_uint8_at_h_w_and_within_a_grey_level_of_ours():
    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (53, 71, 3), dtype=np.uint8), (5, 5), 0)
    ours = F.interpolate(torch.from_numpy(picture).permute(2, 0, 1)[None].double(), size=(37, 50), mode="bilinear",
                         align_corners=False)[0].permute(1, 2, 0).numpy()  # fmt: skip
    theirs = opencv_resized(picture, (37, 50))
    assert theirs.dtype == np.uint8 and theirs.shape == (37, 50, 3)
    np.testing.assert_array_equal(theirs, cv2.resize(picture, (50, 37), interpolation=cv2.INTER_LINEAR))
    # K2's whole effect on the input: rounding (and OpenCV's fixed-point weights), under one grey level
    assert np.abs(theirs - ours).max() <= 1.0


def test_rescaled_size_rounds_where_our_resize_floors():
    assert rescaled_size(230, 352, 640, 640) == (418, 640)  # 000000037777.jpg, x1.818 (docs/equivalence.md, K1)
    assert rescaled_size(212, 187, 256, 256) == (256, 226)  # 187 * 256 / 212 = 225.8
    spec = InputSpec(min_size=256, max_size=256, mean=(0.5,) * 3, std=(0.25,) * 3, size_divisible=32)
    _, sizes = preprocess([np.zeros((212, 187, 3), np.uint8)], spec)
    assert sizes == [(256, 225)]


def test_canvas_masks_stretch_columns_with_the_height_scale_factor():
    # 000000037777.jpg: 230 x 352 resized to 418 x 640 on a 640 canvas; MMDetection's rescale makes the canvas
    # ceil(640 / sx) = 352 rows but ceil(640 / sy) = 353 columns. A logit ramp along x, zero at canvas x = 600
    # (bilinear resampling keeps a ramp linear): the exact mapping puts the edge at 600 / sx = 330 original
    # columns, the reference's at 600 * 353 / 640 = 330.9, one column more
    centres = torch.arange(80, dtype=torch.float32) * 8 + 4
    logits = (600 - centres).expand(1, 80, 80).contiguous()
    masks = canvas_masks(logits, 8, (640 / 352, 418 / 230), (230, 352))
    assert masks.shape == (1, 230, 352) and masks.dtype == torch.bool
    assert int(masks[0, 100].sum()) == 331
    crop, x0, _ = paste_image_mask(logits[0].numpy(), np.array([0, 0, 352, 230]), 8, (418, 640), (230, 352), 0.0)
    assert x0 == 0 and int(crop[100].sum()) == 330


def test_two_step_masks_keep_the_exact_geometry_of_ours():
    # stride-4 probabilities of a 64 x 64 padded input whose picture is 64 x 48, original 40 x 30: a ramp along x
    # crossing 0.5 at input x = 30.4, i.e. original x = 19: both ways give 19 columns (K3 smooths, it does not move)
    centres = torch.arange(16, dtype=torch.float32) * 4 + 2
    probabilities = (0.5 + 0.01 * (30.4 - centres)).expand(2, 16, 16).contiguous()
    masks = two_step_masks(probabilities, 4, (64, 48), (40, 30), 0.5)
    assert masks.shape == (2, 40, 30)
    assert masks[:, :, :19].all() and not masks[:, :, 19:].any()
    crop, _, _ = paste_image_mask(probabilities[0].numpy(), np.array([0, 0, 30, 40]), 4, (64, 48), (40, 30), 0.5)
    np.testing.assert_array_equal(crop, masks[0].numpy())
