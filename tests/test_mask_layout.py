"""What an architecture may state through the contract beyond the defaults, and every backend follows: a padding
canvas and value (``InputSpec.pad_to_square``, ``pad_value``), masks as logits (``mask_logits``) and masks not cut
to their boxes (``mask_box_crop``), as MMDetection's RTMDet-Ins pre- and post-processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.inference.backends.exported import graph_inputs
from instaseg.inference.postprocess import RawDetections, mask_extents, postprocess
from instaseg.inference.preprocess import preprocess
from instaseg.models.common.masks import paste_image_masks
from instaseg.models.detector import InputSpec, resize_transform
from instaseg.models.metadata import spec_from_metadata

GREY = 114 / 255


def _decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _steep_logits(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Blobs with the steep logits of a trained RTMDet-Ins (tens of units): where probabilities saturate."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(2, h - 2), rng.uniform(2, w - 2), rng.uniform(1.5, 4)
        out.append(40.0 * (r - np.hypot(ys - cy, xs - cx)))
    return np.stack(out).astype(np.float32)


def test_preprocess_pads_onto_the_canvas_with_the_pad_value():
    spec = InputSpec(min_size=64, max_size=64, pad_to_square=True, pad_value=GREY)
    picture = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    batch, sizes = preprocess([picture], spec)
    assert sizes == [(38, 64)] and batch.shape == (1, 3, 64, 64)
    fill = (GREY - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    torch.testing.assert_close(batch[0, :, 40:, :], fill[:, None, None].expand(3, 24, 64))
    # the eager model's transform pads the same way
    transform = resize_transform(64, 64, pad_to_square=True, pad_value=GREY).eval()
    eager, _ = transform([torch.from_numpy(picture).permute(2, 0, 1).float() / 255])
    torch.testing.assert_close(eager.tensors, batch, atol=1e-5, rtol=0)
    assert InputSpec.of_transform(transform) == spec


def test_canvas_holds_larger_images_and_default_padding_is_unchanged():
    spec = InputSpec(min_size=64, max_size=64, pad_to_square=True)
    assert spec.padded_frame(30, 50) == (64, 64) and spec.padded_frame(70, 100) == (96, 128)
    frame = spec.padded_frame(torch.tensor(30), torch.tensor(70))  # traced sizes: tensors
    assert [int(v) for v in frame] == [64, 96]
    plain = InputSpec(min_size=64, max_size=64)
    assert plain.padded_frame(30, 50) == (32, 64) and plain.pad_fill() == (0.0, 0.0, 0.0)
    batch, _ = preprocess([np.zeros((20, 64, 3), np.uint8)], plain)
    assert batch.shape == (1, 3, 32, 64)


def test_exported_graph_inputs_are_the_canvas_and_metadata_keeps_it():
    from instaseg.export.metadata import build_metadata

    spec = InputSpec(min_size=64, max_size=64, pad_to_square=True, pad_value=GREY)
    batch, sizes = preprocess([np.zeros((30, 50, 3), np.uint8), np.zeros((64, 20, 3), np.uint8)], spec)
    feeds = list(graph_inputs(batch, sizes, {"dynamic": True}, spec))
    assert [f["images"].shape for f in feeds] == [(1, 3, 64, 64)] * 2
    static = next(graph_inputs(batch, sizes, {"dynamic": False, "height": 96, "width": 96}, spec))["images"]
    np.testing.assert_allclose(static[0, :, 90, 90], spec.pad_fill(), rtol=1e-6)
    meta = build_metadata({"class_names": ["a"], "category_ids": [1]}, spec, {})
    assert spec_from_metadata(meta) == spec
    del meta["preprocess"]["pad_to_square"], meta["preprocess"]["pad_value"]  # an export from before: zeros
    assert spec_from_metadata(meta) == InputSpec(min_size=64, max_size=64)


def test_logit_masks_are_resampled_as_logits():
    """Thresholding resampled logits at 0 is what the reference does; resampling their float32 probabilities
    (saturated at 0 and 1) moves the contour of a steep mask."""
    logits = _steep_logits(3, 12, 16, seed=1)
    boxes = np.array([[0, 0, 128, 96]] * 3, np.float32)
    size, image = (96, 128), (150, 200)
    raw = RawDetections(boxes, np.ones(3, np.float32), np.ones(3, np.int64), logits, mask_stride=8, mask_logits=True)
    got = np.stack([_decode(r) for r in postprocess(raw, size, image).rles])
    exact = paste_image_masks(torch.from_numpy(logits), torch.tensor([[0.0, 0, 200, 150]] * 3), 8, size, image,
                              logits=True)[:, 0] > 0.5  # fmt: skip
    np.testing.assert_array_equal(got, exact.numpy())
    probs = torch.from_numpy(logits).sigmoid().numpy()  # float32: 0 and 1 beyond |logit| of about 17
    as_probs = RawDetections(boxes, np.ones(3, np.float32), np.ones(3, np.int64), probs, mask_stride=8)
    from_probs = np.stack([_decode(r) for r in postprocess(as_probs, size, image).rles])
    assert (from_probs != got).sum() > 0.002 * got.size  # another contour


def test_uncut_masks_keep_what_lies_outside_their_box():
    logits = _steep_logits(4, 12, 16, seed=2)
    boxes = np.array([[10, 10, 30, 30]] * 4, np.float32)  # far smaller than the masks
    size, image = (96, 128), (96, 128)
    common = dict(mask_stride=8, mask_logits=True)
    cut = RawDetections(boxes, np.ones(4, np.float32), np.ones(4, np.int64), logits, **common)
    whole = RawDetections(boxes, np.ones(4, np.float32), np.ones(4, np.int64), logits, mask_box_crop=False, **common)
    cut_masks = np.stack([_decode(r) for r in postprocess(cut, size, image).rles])
    whole_masks = np.stack([_decode(r) for r in postprocess(whole, size, image).rles])
    full = paste_image_masks(torch.from_numpy(logits), torch.from_numpy(boxes), 8, size, image, crop=False,
                             logits=True)[:, 0] > 0.5  # fmt: skip
    np.testing.assert_array_equal(whole_masks, full.numpy())
    assert whole_masks.sum() > cut_masks.sum() and not cut_masks[:, 31:, :].any()


@pytest.mark.parametrize("image", [(96, 128), (300, 400), (20, 27)])
def test_mask_extents_hold_every_pixel_that_passes(image):
    masks = _steep_logits(20, 12, 16, seed=3) / 40.0  # gentler slopes: wide bilinear fringes
    windows = mask_extents(masks, 0.0, 8, (96, 128), image)
    full = paste_image_masks(torch.from_numpy(masks), torch.zeros(20, 4), 8, (96, 128), image, crop=False)
    for window, mask in zip(windows, (full[:, 0] > 0.5).numpy(), strict=True):
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert window[0] <= xs.min() and window[1] <= ys.min()
            assert xs.max() < window[2] and ys.max() < window[3]
