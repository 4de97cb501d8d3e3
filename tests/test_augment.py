"""The published recipes' augmentations: zoom-out, minimum-IoU crop, per-image and per-batch multi-scale, stretch
resize, and the colour changes; boxes, masks and labels stay together through each."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from instaseg.data.augment import (
    MEAN_PIXEL,
    BatchMultiScale,
    MultiScaleResize,
    ZoomOutCropResize,
    box_iou,
    kept_in_window,
    min_iou_crop,
    photometric,
)
from instaseg.data.dataset import collate_fn
from instaseg.data.pipeline import build_transforms, train_collate
from instaseg.data.transforms import ResizeToRecipe, boxes_from_masks, unwrap_sample, wrap_sample
from instaseg.errors import UserError
from instaseg.models.recipes import apply_overrides, load_recipe

RECTS = ((10, 8, 40, 28), (50, 20, 90, 70), (5, 50, 25, 75))


def _sample(h: int = 80, w: int = 100, rects=RECTS):
    masks = torch.zeros((len(rects), h, w), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    target = {"boxes": torch.tensor(rects, dtype=torch.float32).reshape(-1, 4), "masks": masks,
              "labels": torch.arange(1, len(rects) + 1), "image_id": 1, "orig_size": (h, w)}  # fmt: skip
    return wrap_sample(image, target)


def _check(image, target, size=None):
    image, target = unwrap_sample(image, target)
    n = len(target["labels"])
    assert target["boxes"].shape == (n, 4) and target["masks"].shape[0] == n
    assert target["masks"].shape[-2:] == image.shape[-2:]
    if size is not None:
        assert tuple(image.shape[-2:]) == size
    # rectangles stay rectangles: each box holds its mask (to a pixel of resampling)
    drawn = boxes_from_masks(target["masks"])
    assert torch.allclose(target["boxes"], drawn, atol=1.5), (target["boxes"], drawn)
    return image, target


def test_min_iou_crop_overlaps_an_object_and_keeps_its_centre() -> None:
    random.seed(0)
    boxes = np.array(RECTS, dtype=np.float32)
    crops = [min_iou_crop(boxes, 80, 100) for _ in range(200)]
    found = [c for c in crops if c is not None]
    assert 0 < len(found) < 200  # "no crop" is one of the draws
    for window in found:
        assert kept_in_window(boxes, window).any()
        w, h = window[2] - window[0], window[3] - window[1]
        assert min(window[0], window[1]) >= 0 and window[2] <= 100 and window[3] <= 80
        # scale in [0.3, 1], aspect in [0.5, 2] (sides truncated to whole pixels)
        assert 0.3 * 0.3 * 0.9 <= (w * h) / (100 * 80) <= 1.0 and 0.45 <= (w / 100) / (h / 80) <= 2.2
    assert box_iou(boxes, np.array([10, 8, 40, 28], dtype=np.float32))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("keep_ratio", [True, False])
def test_zoom_out_and_crop_keep_instances_together(keep_ratio: bool) -> None:
    random.seed(1)
    torch.manual_seed(1)
    step = ZoomOutCropResize(64, 96, keep_ratio, zoom_out=1.0, max_ratio=4.0, crop=1.0)
    for _ in range(30):
        image, target = _check(*step(*_sample()))
        if not keep_ratio:
            assert image.shape[-2:] == (96, 96)
        else:
            assert max(image.shape[-2:]) <= 96 and (min(image.shape[-2:]) == 64 or max(image.shape[-2:]) == 96)
        assert set(target["labels"].tolist()) <= {1, 2, 3}


def test_zoom_out_fills_the_canvas_with_the_mean_pixel() -> None:
    random.seed(3)
    image = torch.full((3, 40, 40), 255, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "masks": torch.zeros((1, 40, 40), dtype=torch.uint8),
              "labels": torch.tensor([1]), "image_id": 1, "orig_size": (40, 40)}  # fmt: skip
    target["masks"][0, 10:30, 10:30] = 1
    out, out_target = unwrap_sample(*ZoomOutCropResize(40, 40, False, 1.0, 4.0, 0.0)(*wrap_sample(image, target)))
    assert out.shape == (3, 40, 40)
    filled = (out == torch.tensor(MEAN_PIXEL, dtype=torch.uint8).view(3, 1, 1)).all(dim=0)
    assert filled.float().mean() > 0.3  # the canvas is up to 4x larger: much of it is fill
    assert (out[:, ~filled] == 255).all()  # and the image is the rest
    side = out_target["boxes"][0, 2] - out_target["boxes"][0, 0]
    assert 20 / 4 - 1 <= side < 20  # zoomed out: the object shrank by the canvas ratio


def test_multiscale_draws_a_shorter_side_per_image() -> None:
    random.seed(0)
    step = MultiScaleResize([32, 48, 64], max_size=200)
    sides = set()
    for _ in range(30):
        image, _ = _check(*step(*_sample()))
        sides.add(min(image.shape[-2:]))
        assert image.shape[-1] / image.shape[-2] == pytest.approx(100 / 80, rel=0.05)
    assert sides == {32, 48, 64}


def test_batch_multiscale_stretches_a_batch_to_one_side() -> None:
    random.seed(0)
    batch = []
    for _ in range(3):
        image, target = unwrap_sample(*_sample())
        batch.append((image.float() / 255, target))
    collate = BatchMultiScale([64, 96], collate_fn)
    seen = set()
    for _ in range(20):
        images, targets = collate(batch)
        side = images[0].shape[-1]
        seen.add(side)
        assert all(tuple(im.shape[-2:]) == (side, side) for im in images)
        for t in targets:
            assert t["masks"].shape[-2:] == (side, side)
            assert torch.allclose(t["boxes"], boxes_from_masks(t["masks"]), atol=1.5)
    assert seen == {64, 96}


def test_stretch_resize_makes_a_square() -> None:
    image, target = _check(*ResizeToRecipe(64, 64, keep_ratio=False)(*_sample()), size=(64, 64))
    jittered = ResizeToRecipe(64, 64, (0.5, 1.5), keep_ratio=False)
    for _ in range(10):
        _check(*jittered(*_sample()), size=(64, 64))


@pytest.mark.parametrize("style", [True, "jitter", "distort", "hsv"])
def test_photometric_styles_change_colours_only(style) -> None:
    torch.manual_seed(0)
    random.seed(0)
    image, target = _sample()
    op = photometric(style, 1.0)
    changed = False
    for _ in range(5):
        out, out_target = op(image, target)
        assert out.shape == image.shape and out.dtype == torch.uint8
        assert torch.equal(out_target["boxes"], target["boxes"])
        changed |= not torch.equal(out, image)
    assert changed
    assert photometric(False, 1.0) is None


def test_published_pipelines_are_built_from_the_recipe() -> None:
    """Mask-RT-DETR: colour, zoom-out + IoU crop + stretch, flip, then a batch side per batch; SOLOv2: a shorter
    side per image."""
    rtdetr = load_recipe("mask_rtdetr_l")
    pipeline = build_transforms(rtdetr["input"], rtdetr["train"], train=True)
    kinds = [type(t).__name__ for t in pipeline.transforms]
    assert kinds[:2] == ["RandomApply", "ZoomOutCropResize"] and "RandomHorizontalFlip" in kinds
    assert isinstance(train_collate(rtdetr["train"]), BatchMultiScale)
    for _ in range(5):
        _check(*pipeline(*_sample()), size=(640, 640))
    solo = load_recipe("solov2_r50_fpn")
    kinds = [type(t).__name__ for t in build_transforms(solo["input"], solo["train"], train=True).transforms]
    assert kinds[0] == "MultiScaleResize" and train_collate(solo["train"]) is collate_fn


def test_resize_keys_must_fit_the_resize_rule() -> None:
    rtdetr = load_recipe("mask_rtdetr_l")
    with pytest.raises(UserError, match="stretch"):
        apply_overrides(rtdetr, ["input.resize=keep_ratio"])
    with pytest.raises(UserError, match="min_size must equal"):
        apply_overrides(rtdetr, ["input.min_size=512"])
    solo = load_recipe("solov2_r50_fpn")
    with pytest.raises(UserError, match="scale_jitter"):
        apply_overrides(solo, ["train.scale_jitter=[0.8, 1.2]"])
    with pytest.raises(UserError, match="multiscale"):
        apply_overrides(solo, ["train.multiscale=[16]"])
