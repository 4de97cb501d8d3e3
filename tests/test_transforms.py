import random

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from instaseg.data.pipeline import build_transforms
from instaseg.data.transforms import (
    CopyPaste,
    ResizeToRecipe,
    boxes_from_masks,
    resize_scale,
    resized_size,
    unwrap_sample,
    wrap_sample,
)
from instaseg.errors import UserError


def _sample(h=40, w=60, rects=((5, 4, 20, 14), (30, 10, 55, 35)), labels=None):
    """A uint8 image with rectangle instances (x1, y1, x2, y2), boxes exactly enclosing the masks."""
    masks = torch.zeros((len(rects), h, w), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    labels = torch.tensor(labels or [i % 3 + 1 for i in range(len(rects))], dtype=torch.int64)
    target = {"boxes": torch.tensor(rects, dtype=torch.float32).reshape(-1, 4), "labels": labels, "masks": masks,
              "image_id": 1, "orig_size": (h, w)}  # fmt: skip
    return wrap_sample(image, target)


def _assert_boxes_match_masks(target):
    boxes, masks = target["boxes"].as_subclass(torch.Tensor), target["masks"].as_subclass(torch.Tensor)
    assert boxes.shape[0] == masks.shape[0] == target["labels"].shape[0]
    assert torch.allclose(boxes, boxes_from_masks(masks), atol=1.0)


@pytest.mark.parametrize(
    ("h", "w", "min_size", "max_size", "expected"),
    [
        (480, 640, 800, 1333, 800 / 480),
        (100, 1000, 800, 1333, 1.333),
        (256, 256, 128, 128, 0.5),
        (50, 80, 100, 100, 1.25),
    ],
)
def test_resize_scale(h, w, min_size, max_size, expected):
    assert resize_scale(h, w, min_size, max_size) == pytest.approx(expected)


def test_resized_size_puts_limiting_side_on_target():
    assert resized_size(480, 640, 256, 256) == (192, 256)
    assert resized_size(333, 500, 800, 1333) == (800, 1201)
    h, w = resized_size(333, 517, 256, 256)
    # the model's own resize rule then computes a scale of exactly 1: its transform keeps the image
    assert resize_scale(h, w, 256, 256) == 1.0


def test_model_resize_is_a_no_op_after_recipe_resize():
    # torchvision's GeneralizedRCNNTransform recomputes resize_scale on our output: it must come out exactly 1
    for min_size, max_size in [(256, 256), (800, 1333), (192, 320)]:
        for h in range(20, 1500, 37):
            for w in range(20, 1500, 41):
                assert resize_scale(*resized_size(h, w, min_size, max_size), min_size, max_size) == 1.0


@pytest.mark.parametrize("scale_range", [[1.2, 0.8], [0, 1], [1.0]])
def test_bad_scale_jitter_is_a_user_error(scale_range):
    with pytest.raises(UserError, match="scale_jitter"):
        build_transforms({"min_size": 32, "max_size": 32}, {"scale_jitter": scale_range}, train=True)


def test_resize_moves_boxes_and_masks_together():
    image, target = ResizeToRecipe(20, 30)(*_sample())
    assert image.shape[-2:] == (20, 30) and target["masks"].shape[-2:] == (20, 30)
    assert target["boxes"].as_subclass(torch.Tensor).tolist() == [[2.5, 2, 10, 7], [15, 5, 27.5, 17.5]]
    _assert_boxes_match_masks(target)


def test_flip_then_box_from_mask_equals_flipped_box():
    image, target = _sample()
    flipped_image, flipped = v2.RandomHorizontalFlip(p=1.0)(image, target)
    w = image.shape[-1]
    expected = target["boxes"].as_subclass(torch.Tensor)[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [w, 0, w, 0]
    )
    assert torch.equal(flipped["boxes"].as_subclass(torch.Tensor), expected)
    assert torch.equal(boxes_from_masks(flipped["masks"]), expected)
    assert torch.equal(flipped_image, image.flip(-1))


@pytest.mark.parametrize("scale_range", [(0.5, 0.6), (1.5, 2.0), (0.8, 1.2)])
def test_scale_jitter_keeps_the_recipe_canvas(scale_range):
    random.seed(0)
    resize = ResizeToRecipe(30, 45, scale_range)
    canvas = resized_size(40, 60, 30, 45)
    for _ in range(10):
        image, target = v2.SanitizeBoundingBoxes()(*resize(*_sample()))
        assert image.shape[-2:] == canvas and target["masks"].shape[-2:] == canvas
        _assert_boxes_match_masks(target)


def test_copy_paste_occludes_and_keeps_targets_consistent():
    random.seed(1)
    torch.manual_seed(1)
    paste = CopyPaste(p=1.0)
    donor = _sample(rects=((0, 0, 60, 40),), labels=[3])  # one instance covering the whole donor
    image, target = _sample(rects=((5, 4, 20, 14), (30, 10, 55, 35)), labels=[1, 2])
    assert paste(*donor)[1] is donor[1]  # no donor yet: passes through and becomes the donor
    out_image, out = paste(image, target)
    assert out["labels"][-1] == 3 and len(out["labels"]) >= 1
    masks = out["masks"].as_subclass(torch.Tensor)
    assert int(masks.sum(0).max()) == 1  # pasted pixels cut what lies beneath: no two masks share a pixel
    _assert_boxes_match_masks(out)
    pasted = masks[-1].bool()
    assert torch.equal(out_image[:, ~pasted], image[:, ~pasted])  # only pasted pixels change


def test_boxes_from_masks_pixel_corners_and_empty_masks():
    masks = torch.zeros((3, 5, 6), dtype=torch.uint8)
    masks[1, 1:3, 2:4] = 1
    masks[2, 4, 5] = 1
    assert boxes_from_masks(masks).tolist() == [[0, 0, 0, 0], [2, 1, 4, 3], [5, 4, 6, 5]]
    assert boxes_from_masks(masks[:0]).shape == (0, 4)


def test_copy_paste_occlusion_cuts_masks_recomputes_boxes_and_drops_hidden_instances():
    _, target = _sample(rects=((0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10)), labels=[1, 2, 3])
    cover = torch.zeros((40, 60), dtype=torch.bool)
    cover[:, 5:10] = True  # hides the right half of instance 1
    cover[:, 20:29] = True  # hides 90% of instance 2
    masks, boxes, labels = CopyPaste(min_visible=0.2)._occlude(target, cover)
    assert labels.tolist() == [1, 3]
    assert boxes.tolist() == [[0, 0, 5, 10], [40, 0, 50, 10]]
    assert int(masks[0].sum()) == 50 and int(masks[1].sum()) == 100


def test_build_transforms_reads_recipe_keys():
    recipe_input = {"min_size": 32, "max_size": 48}
    cfg = {"hflip": True, "scale_jitter": [0.8, 1.2], "photometric": True, "copy_paste": True}
    names = [type(t).__name__ for t in build_transforms(recipe_input, cfg, train=True).transforms]
    assert names == ["ResizeToRecipe", "CopyPaste", "RandomHorizontalFlip", "RandomApply", "SanitizeBoundingBoxes"]
    cfg = {"hflip": False, "scale_jitter": None, "photometric": False, "copy_paste": False}
    names = [type(t).__name__ for t in build_transforms(recipe_input, cfg, train=True).transforms]
    assert names == ["ResizeToRecipe", "SanitizeBoundingBoxes"]


def test_train_pipeline_end_to_end():
    random.seed(0)
    cfg = {"hflip": True, "scale_jitter": [0.7, 1.3], "photometric": True, "copy_paste": True}
    tf = build_transforms({"min_size": 32, "max_size": 48}, cfg, train=True)
    for _ in range(6):
        image, target = unwrap_sample(*tf(*_sample()))
        assert image.shape == (3, 32, 48) and image.dtype == torch.uint8
        assert type(target["boxes"]) is torch.Tensor
        _assert_boxes_match_masks(target)


def test_eval_transforms_resize_or_keep_original():
    image, target = build_transforms({"min_size": 20, "max_size": 20}, None, train=False)(*_sample())
    assert image.shape[-2:] == (13, 20)
    image, target = build_transforms({"min_size": 20, "max_size": 20}, None, train=False, resize=False)(*_sample())
    assert image.shape[-2:] == (40, 60) and target["boxes"].shape == (2, 4)


def test_photometric_changes_colours_only():
    torch.manual_seed(0)
    cfg = {"hflip": False, "photometric": True}
    tf = build_transforms({"min_size": 40, "max_size": 60}, cfg, train=True)
    image, target = _sample()
    changed = 0
    for _ in range(5):
        out_image, out = tf(image, target)
        changed += not torch.equal(out_image, image)
        assert torch.equal(out["masks"], target["masks"]) and torch.equal(out["boxes"], target["boxes"])
    assert changed >= 3  # applied with probability 0.8


def test_recipe_resize_resamples_like_torchvision_detection_models():
    # the same pixels the model's GeneralizedRCNNTransform (and the predictor) produce at inference
    image = torch.rand(3, 48, 64)
    out = ResizeToRecipe(20, 20)(tv_tensors.Image(image))
    scale = resize_scale(48, 64, 20, 20)
    ref = torch.nn.functional.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    assert out.shape == ref.shape == (3, 15, 20)
    assert torch.allclose(out.as_subclass(torch.Tensor), ref, atol=1e-6)
