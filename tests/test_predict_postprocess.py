"""Mask pasting and RLE encoding: equal to torchvision's paste, exact RLE, thousands of instances on 4K."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instaseg.inference.postprocess import (
    RawDetections,
    crop_to_rle,
    masks_to_rles,
    paste_image_mask,
    postprocess,
    rle_counts,
    rle_to_crop,
    scale_boxes,
)


def _low_res_masks(n: int, seed: int, size: int = 28) -> np.ndarray:
    """Smooth blobs in [0, 1], like trained mask heads give (random noise would sit at the 0.5 threshold)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 1, (n, size, size)).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(m, (9, 9), 3) for m in noise])
    lo, hi = blurred.min(axis=(1, 2), keepdims=True), blurred.max(axis=(1, 2), keepdims=True)
    return (blurred - lo) / (hi - lo)


def _random_boxes(n: int, h: int, w: int, seed: int, max_side: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(-30, w - 1, n), rng.uniform(-30, h - 1, n)
    bw, bh = rng.uniform(0.5, max_side, n), rng.uniform(0.5, max_side, n)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)
    # detectors clip boxes to the image (torchvision's paste fails on boxes wholly outside it)
    return np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def test_pasted_masks_match_torchvision():
    h, w, n = 97, 131, 200
    masks = _low_res_masks(n, seed=0)
    boxes = _random_boxes(n, h, w, seed=1, max_side=120)
    boxes[0] = [-5, -5, w + 5, h + 5]  # larger than the image
    boxes[1] = [10.2, 20.7, 10.6, 21.1]  # sub-pixel box
    ref = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (h, w))[:, 0] > 0.5
    rles = masks_to_rles(masks, boxes, (h, w))
    assert len(rles) == n and all(isinstance(r["counts"], str) and r["size"] == [h, w] for r in rles)
    nonempty = 0
    for rle, expected in zip(rles, ref.numpy(), strict=True):
        ours = _decode(rle)
        union = (ours | expected).sum()
        if union:
            nonempty += 1
            assert (ours & expected).sum() / union >= 0.99
    assert nonempty > n // 2


def test_crop_rle_equals_full_image_encoding():
    rng = np.random.default_rng(2)
    h, w = 41, 57
    cases = [(rng.uniform(size=(rng.integers(1, h), rng.integers(1, w))) > 0.5) for _ in range(30)]
    cases += [np.ones((h, 5), bool), np.ones((h, w), bool), np.zeros((3, 3), bool)]  # runs across full columns
    for crop in cases:
        ch, cw = crop.shape
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        full = np.zeros((h, w), np.uint8)
        full[y0 : y0 + ch, x0 : x0 + cw] = crop
        expected = mask_utils.encode(np.asfortranarray(full))["counts"].decode("ascii")
        assert crop_to_rle(crop, x0, y0, h, w)["counts"] == expected


def test_postprocess_filters_and_scales_boxes():
    raw = RawDetections(
        boxes=np.array([[10, 10, 30, 20], [0, 0, 50, 40]], np.float32),
        scores=np.array([0.9, 0.2], np.float32),
        labels=np.array([2, 1]),
        masks=np.ones((2, 28, 28), np.float32),  # [N,M,M] per box (RawOutput's form)
    )
    det = postprocess(raw, input_size=(50, 100), image_size=(100, 50), score_threshold=0.5)
    np.testing.assert_allclose(det.boxes, [[5, 20, 15, 40]])
    assert det.labels.tolist() == [2] and len(det.rles) == 1
    mask = _decode(det.rles[0])
    ys, xs = np.nonzero(mask)
    assert mask.shape == (100, 50)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], det.boxes[0], atol=1)  # fills its box
    np.testing.assert_allclose(scale_boxes(np.array([[2.0, 4.0, 6.0, 8.0]]), (10, 10), (20, 5)), [[1, 8, 3, 16]])


def test_many_instances_on_4k_stay_small():
    """2,000 instances on a 2160x3840 image: pasting all at full size would need 66 GB of floats."""
    h, w, n = 2160, 3840, 2000
    masks = _low_res_masks(n, seed=3)
    boxes = _random_boxes(n, h, w, seed=4, max_side=600)
    raw = RawDetections(boxes=boxes, scores=np.linspace(1, 0.5, n), labels=np.ones(n, np.int64), masks=masks)
    tracemalloc.start()
    det = postprocess(raw, input_size=(h, w), image_size=(h, w))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 1024**3, f"peak {peak / 1024**3:.2f} GB"
    assert len(det.rles) == n
    # spot-check a few against torchvision's full-size paste of the same instances
    for i in (0, 777, 1999):
        ref = paste_masks_in_image(torch.from_numpy(masks[i : i + 1, None]), torch.from_numpy(boxes[i : i + 1]), (h, w))
        expected = ref[0, 0].numpy() > 0.5
        ours = _decode(det.rles[i])
        union = (ours | expected).sum()
        assert union == 0 or (ours & expected).sum() / union >= 0.99


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_mask_threshold_is_used(threshold):
    masks = _low_res_masks(1, seed=5)
    box = np.array([[0, 0, 56, 56]], np.float32)
    area = _decode(masks_to_rles(masks, box, (64, 64), threshold)[0]).sum()
    expected = (
        paste_masks_in_image(torch.from_numpy(masks[:, None]), torch.from_numpy(box), (64, 64)) > threshold
    ).sum()
    assert abs(int(area) - int(expected)) <= 0.01 * int(expected)


def test_rle_counts_and_window_decode_match_pycocotools():
    rng = np.random.default_rng(6)
    masks = [rng.uniform(size=(37, 53)) > 0.6, np.ones((20, 30), bool), np.zeros((20, 30), bool)]
    big = np.zeros((300, 400), bool)
    big[10:290, 3:399] = True  # long runs: counts over several 5-bit groups
    for mask in [*masks, big]:
        coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        flat = mask.T.ravel().astype(np.int8)
        edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        expected = ([0] if flat[0] else []) + np.diff(edges).tolist()
        assert rle_counts(coded["counts"]).tolist() == expected
        rle = {"size": list(mask.shape), "counts": coded["counts"].decode("ascii")}
        h, w = mask.shape
        for x0, y0, cw, ch in [(0, 0, w, h), (2, 3, w // 2, h // 3), (w - 1, h - 1, 1, 1)]:
            np.testing.assert_array_equal(rle_to_crop(rle, x0, y0, cw, ch), mask[y0 : y0 + ch, x0 : x0 + cw])


def _dense_bilinear(n_out: int, start: int, scale: float, n_in: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights over the whole low-res axis, one output pixel at a time (border clamped)."""
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    for k in range(n_out):
        coord = min(max((start + k + 0.5) * scale - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(coord))
        frac = np.float32(coord - lo)
        weights[k, lo] += 1 - frac
        weights[k, min(lo + 1, n_in - 1)] += frac
    return weights


@pytest.mark.parametrize("stride", [4, 8])
def test_image_mask_paste_reads_only_the_window_and_equals_the_whole_map(stride):
    """Pasting an image-frame mask multiplies only the low-res window under the box: the same pixels as the
    product over the whole map, boxes at the borders and past them included."""
    rng = np.random.default_rng(stride)
    for case in range(60):
        in_h, in_w = (int(v) for v in rng.integers(2, 21, 2) * 32)
        maps = _low_res_masks(1, case, size=max(in_h, in_w) // stride)[0][: in_h // stride, : in_w // stride]
        out_h, out_w = (int(v) for v in rng.integers(20, 900, 2))
        box = _random_boxes(1, out_h, out_w, case, max_side=min(out_h, out_w))[0]
        crop, x0, y0 = paste_image_mask(maps, box, stride, (in_h, in_w), (out_h, out_w))
        left, top = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x1, y1 = min(int(np.ceil(box[2])), out_w), min(int(np.ceil(box[3])), out_h)
        if x1 <= left or y1 <= top:
            assert crop.size == 0
            continue
        assert (x0, y0) == (left, top)
        rows = _dense_bilinear(y1 - y0, y0, in_h / (out_h * stride), maps.shape[0])
        cols = _dense_bilinear(x1 - x0, x0, in_w / (out_w * stride), maps.shape[1])
        np.testing.assert_array_equal(crop, rows @ maps @ cols.T > 0.5)
