"""MMDetection's pre- and post-processing choices (tools/mmdet_conventions.py, the kept differences K1-K3 of
docs/equivalence.md) on synthetic inputs: their geometry, and how far each is from ours; and the pure parts of
tools/mmdet_kept_differences.py, which measures their effect on AP."""

from __future__ import annotations

import dataclasses
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from instaseg.inference.postprocess import paste_image_mask
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import InputSpec

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from mmdet_conventions import canvas_masks, opencv_resized, rescaled_size, two_step_masks  # noqa: E402
from mmdet_kept_differences import normalised, padded_input, parse_scale, rescaled_annotation  # noqa: E402

SPEC = InputSpec(min_size=256, max_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size_divisible=32,
                 pad_to_square=True, pad_value=114 / 255)  # fmt: skip


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
    _, sizes = preprocess([np.zeros((212, 187, 3), np.uint8)], SPEC)
    assert sizes == [(256, 225)]
    _, sizes = preprocess([np.zeros((187, 187, 3), np.uint8)], SPEC)  # 187 * (256 / 187) = 255.99999999999997
    assert sizes == [(255, 255)] and rescaled_size(187, 187, 256, 256) == (256, 256)
    rounding = dataclasses.replace(SPEC, size_rounding="round")  # RTMDet-Ins' and SOLOv2's input spec
    for hw in [(212, 187), (187, 187), (230, 352), (187, 212)]:
        _, sizes = preprocess([np.zeros((*hw, 3), np.uint8)], rounding)
        assert sizes == [rescaled_size(*hw, 256, 256)]


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


def test_padded_input_is_preprocess_without_its_resize():
    picture = np.random.default_rng(1).integers(0, 256, (256, 200, 3), dtype=np.uint8)
    ours, sizes = preprocess([picture], SPEC)  # at the network's size already: preprocess only normalises and pads
    assert sizes == [(256, 200)]
    assert torch.equal(padded_input(normalised(picture, SPEC, "cpu"), SPEC), ours)
    small = padded_input(normalised(picture[:255, :255], SPEC, "cpu"), SPEC)  # where preprocess would resize
    assert small.shape == (1, 3, 256, 256) and torch.equal(small[..., :255, :255], ours[..., :255, :255])


def test_rescaled_annotation_follows_the_picture():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 5:25] = 1  # 20 x 20 at x 5, y 10
    rle = {"size": [40, 50], "counts": mask_utils.encode(np.asfortranarray(mask))["counts"].decode()}
    image = {"id": 1, "height": 40, "width": 50}
    fx, fy = parse_scale("1.5x0.75")
    ann = rescaled_annotation({"id": 7, "image_id": 1, "category_id": 2, "segmentation": rle}, image, (30, 75))
    assert (fx, fy) == (1.5, 0.75) and parse_scale("0.73") == (0.73, 0.73)
    # x 5..25 -> 7.5..37.5, y 10..30 -> 7.5..22.5: pixels whose centre is inside, the ties at 0.5 left out
    assert ann["bbox"] == [8.0, 8.0, 29.0, 14.0] and ann["area"] == 29 * 14 and ann["segmentation"]["size"] == [30, 75]
    assert rescaled_annotation(dict(ann, segmentation=rle), image, (4, 5)) is not None
    tiny = np.zeros((40, 50), np.uint8)
    tiny[0, 0] = 1
    gone = {"size": [40, 50], "counts": mask_utils.encode(np.asfortranarray(tiny))["counts"].decode()}
    assert rescaled_annotation({"segmentation": gone}, image, (4, 5)) is None
