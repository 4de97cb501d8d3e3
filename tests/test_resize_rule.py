"""The resized size: each architecture's reference rule (torchvision floors, MMDetection rounds half up), the same in
the eager transform, the shared pre-processing, training and an exported model's metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.errors import UserError
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import InputSpec
from instaseg.models.factory import build_model
from instaseg.models.metadata import spec_from_metadata
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.utils.resize_rule import resized_size, scaled_side

AT_256 = ["input.min_size=256", "input.max_size=256"]


def _mmcv_rescale_size(h: int, w: int, short_edge: float, long_edge: float) -> tuple[int, int]:
    """MMDetection 3.3's size for Resize(scale=(long, short), keep_ratio=True): mmcv.rescale_size, written out."""
    scale = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * float(scale) + 0.5), int(w * float(scale) + 0.5)


@pytest.fixture(scope="module")
def models() -> dict:
    small = {
        "rtmdet_ins_tiny": ["model.widen=0.0625", "model.deepen=0.167", "model.neck_channels=16"],
        "solov2_fast": [],
        "maskrcnn_fast": [],
        "cascade_maskrcnn_fast": [],
    }
    out = {}
    for name, overrides in small.items():
        model = build_model(apply_overrides(load_recipe(name), [*AT_256, *overrides]), 2, weights="none").eval()
        out[name] = model
    return out


def test_the_rules_round_half_up_and_floor():
    assert scaled_side(187, 256 / 187, "floor") == 255  # 255.99999999999997
    assert scaled_side(187, 256 / 187, "round") == 256
    assert scaled_side(5, 0.5, "round") == 3 and round(2.5) == 2  # half up, not Python's half to even
    assert scaled_side(5, 0.5, "floor") == 2
    assert scaled_side(1, 0.1, "floor") == 1  # never empty
    with pytest.raises(ValueError, match="size rounding"):
        scaled_side(10, 1.0, "nearest")
    with pytest.raises(ValueError, match="size_rounding"):
        InputSpec(256, 256, size_rounding="ceil")


@pytest.mark.parametrize("hw", [(212, 187), (187, 212), (187, 187), (480, 333), (230, 352), (97, 500)])
def test_each_architecture_sizes_as_its_reference(models, hw):
    h, w = hw
    mmdet = _mmcv_rescale_size(h, w, 256, 256)
    scale = min(256 / min(h, w), 256 / max(h, w))
    torchvision = (int(np.floor(h * scale)), int(np.floor(w * scale)))
    for name, expected in [("rtmdet_ins_tiny", mmdet), ("solov2_fast", mmdet), ("maskrcnn_fast", torchvision),
                           ("cascade_maskrcnn_fast", torchvision)]:  # fmt: skip
        model = models[name]
        spec = model.input_spec
        assert spec.resized_size(h, w) == expected, name
        _, sizes = preprocess([np.zeros((h, w, 3), np.uint8)], spec)  # every backend's pre-processing
        assert sizes == [expected], name
        image_list, _ = model.transform([torch.zeros(3, h, w)])  # the eager model's own
        assert tuple(image_list.image_sizes[0]) == expected, name


def test_the_212_by_187_picture(models):
    assert models["rtmdet_ins_tiny"].input_spec.resized_size(212, 187) == (256, 226)  # MMDetection's
    assert models["maskrcnn_fast"].input_spec.resized_size(212, 187) == (256, 225)  # torchvision's


def test_eager_resize_of_the_rounded_size_is_the_shared_preprocessing(models):
    """The eager transform and `preprocess` resample alike at the rounded size, and boxes follow the picture."""
    model = models["rtmdet_ins_tiny"]
    picture = np.random.default_rng(0).integers(0, 256, (212, 187, 3), dtype=np.uint8)
    ours, sizes = preprocess([picture], model.input_spec)
    image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    model.transform.train()
    try:
        target = {"boxes": torch.tensor([[0.0, 0.0, 187.0, 212.0]]), "labels": torch.tensor([1]),
                  "masks": torch.ones(1, 212, 187, dtype=torch.uint8)}  # fmt: skip
        image_list, targets = model.transform([image], [target])
    finally:
        model.transform.eval()
    assert sizes == [(256, 226)] and tuple(image_list.image_sizes[0]) == (256, 226)
    torch.testing.assert_close(image_list.tensors[..., :256, :226], ours[..., :256, :226], atol=2e-6, rtol=0)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.0, 0.0, 226.0, 256.0]]))
    assert targets[0]["masks"].shape == (1, 256, 226)


def test_training_sizes_round_half_up():
    assert resized_size(212, 187, 256, 256) == (256, 226)
    assert resized_size(3, 5, 1.5, 3) == (2, 3)  # 1.5 and 2.5 up: Python's round would give (2, 2)


def _meta(**input_keys) -> dict:
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3, "size_divisible": 32}
    return {"input": {"min_size": 256, "max_size": 256, **input_keys}, "preprocess": pre}


def test_exports_carry_the_rule_and_older_ones_floor():
    assert spec_from_metadata(_meta()).size_rounding == "floor"  # made before the key existed: torchvision's rule
    assert spec_from_metadata(_meta(size_rounding="round")).size_rounding == "round"
    with pytest.raises(UserError, match=r"model\.onnx.*size_rounding"):
        spec_from_metadata(_meta(size_rounding="ceil"), "model.onnx")
