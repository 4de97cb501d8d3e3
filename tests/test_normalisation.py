"""The normalisation's float32 arithmetic as a model option (``normalisation``): MMDetection's pixel-unit
``(v - mean_px) / std_px`` and PaddleDetection's float64 steps beside torchvision's ``(v / 255 - mean) / std``, the
same floats in the shared pre-processing (a table per uint8 level), the eager transform and the padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.errors import UserError
from instaseg.export.metadata import build_metadata
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import InputSpec
from instaseg.models.factory import build_model
from instaseg.models.metadata import spec_from_metadata
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.utils.normalisation import NORMALISATIONS, level_table, pixel_constants

# MMDetection's configs (RGB order; RTMDet's lists them BGR), as its DetDataPreprocessor holds them: float32
MEAN_PX = np.array([123.675, 116.28, 103.53], np.float32)
STD_PX = np.array([58.395, 57.12, 57.375], np.float32)
SMALL_RTMDET = ["input.min_size=96", "input.max_size=96", "model.widen=0.0625", "model.neck_channels=16"]
LEVELS = np.arange(256)


def _all_levels() -> np.ndarray:
    """A 16 x 16 uint8 picture holding every level once on each channel (the channels in different orders)."""
    return np.stack([LEVELS, LEVELS[::-1], np.roll(LEVELS, 100)], axis=-1).reshape(16, 16, 3).astype(np.uint8)


def _pixel_reference(picture: np.ndarray) -> np.ndarray:
    """MMDetection's normalisation written out: float32 (v - mean_px) / std_px, [3,H,W]."""
    values = picture.transpose(2, 0, 1).astype(np.float32)
    return (values - MEAN_PX[:, None, None]) / STD_PX[:, None, None]


def _paddle_reference(picture: np.ndarray, spec: InputSpec) -> np.ndarray:
    """PaddleDetection's NormalizeImage written out: float32 x (1 / 255), then float64 mean and std arrays in
    place."""
    im = picture.astype(np.float32)
    im *= 1.0 / 255.0
    im -= np.array(spec.mean)[None, None, :]
    im /= np.array(spec.std)[None, None, :]
    return im.transpose(2, 0, 1)


def test_a_float_picture_from_uint8_gives_its_levels_back():
    levels = torch.arange(256, dtype=torch.uint8).float()
    assert torch.equal(levels / 255.0 * 255.0, levels)


def test_the_pixel_arithmetic_is_mmdetections_for_every_level():
    spec = InputSpec(16, 16, normalisation="pixel")
    assert pixel_constants(spec.mean) == (123.675, 116.28, 103.53)
    assert pixel_constants(spec.std) == (58.395, 57.12, 57.375)
    table = level_table(spec.mean, spec.std, "pixel").numpy()
    expected = (LEVELS[None].astype(np.float32) - MEAN_PX[:, None]) / STD_PX[:, None]
    assert np.array_equal(table, expected)
    picture = _all_levels()
    batch, _ = preprocess([picture], spec)
    assert np.array_equal(batch[0, :, :16, :16].numpy(), _pixel_reference(picture))
    unit = level_table(spec.mean, spec.std, "unit").numpy()
    assert (unit != table).sum() > 100  # the arithmetics differ: the checks above can fail


def test_the_paddle_arithmetic_is_paddledetections_for_every_level():
    spec = InputSpec(16, 16, normalisation="paddle")
    picture = _all_levels()
    batch, _ = preprocess([picture], spec)
    expected = _paddle_reference(picture, spec)
    assert np.array_equal(batch[0, :, :16, :16].numpy(), expected)
    unit, _ = preprocess([picture], InputSpec(16, 16))
    assert (unit[0, :, :16, :16].numpy() != expected).sum() > 10
    # mean 0 and std 1 (Mask-RT-DETR, PP-YOLOE-seg): the product by float32(1 / 255) alone, not v / 255
    plain = ((0.0,) * 3, (1.0,) * 3)
    product = LEVELS.astype(np.float32) * np.float32(1 / 255)
    assert np.array_equal(level_table(*plain, "paddle").numpy(), np.stack([product] * 3))
    assert int((level_table(*plain, "unit") != level_table(*plain, "paddle")).sum()) == 3 * 126


def test_the_default_is_the_unit_arithmetic_unchanged():
    spec = InputSpec(16, 16)
    assert spec.normalisation == "unit"
    picture = _all_levels()
    image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (spec.mean, spec.std))
    assert torch.equal(preprocess([picture], spec)[0][0, :, :16, :16], (image - mean) / std)
    for name in ("maskrcnn_fast", "rtmdet_ins_tiny_fast", "solov2_fast"):
        model = build_model(apply_overrides(load_recipe(name), ["input.min_size=96", "input.max_size=96"]), 2)
        assert model.input_spec.normalisation == "unit", name
    with pytest.raises(ValueError, match="normalisation"):
        InputSpec(16, 16, normalisation="bytes")


def test_recipes_of_published_models_normalise_as_their_publisher():
    for name in ("rtmdet_ins_tiny", "rtmdet_ins_s", "rtmdet_ins_m", "rtmdet_ins_l", "rtmdet_ins_x", "solov2_r50_fpn"):
        assert load_recipe(name)["model"]["normalisation"] == "pixel", name  # MMDetection's DetDataPreprocessor
    paddlex = ["maskrcnn_r50_fpn_paddlex", "maskrcnn_r50vd_fpn", "maskrcnn_r101_fpn", "maskrcnn_r101vd_fpn"]
    paddlex += ["maskrcnn_x101vd_fpn", "maskrcnn_r50_c4", "cascade_maskrcnn_r50_fpn", "cascade_maskrcnn_r50vd_fpn"]
    paddlex += [f"mask_rtdetr_{s}" for s in "smlxh"] + ["ppyoloe_seg_s"]
    for name in paddlex:
        assert load_recipe(name)["model"]["normalisation"] == "paddle", name  # PaddleDetection's NormalizeImage
    for name in ("rtmdet_ins_tiny_fast", "solov2_fast", "maskrcnn_fast", "cascade_maskrcnn_fast", "ppyoloe_seg_fast"):
        assert load_recipe(name)["model"]["normalisation"] == "unit", name
    assert load_recipe("maskrcnn_r50_fpn")["model"]["normalisation"] == "unit"  # torchvision's model


@pytest.mark.parametrize(
    "name", ["rtmdet_ins_tiny", "solov2_r50_fpn", "maskrcnn_fast", "cascade_maskrcnn_fast", "mask_rtdetr_fast"]
)
def test_an_unknown_value_is_refused_in_one_line(name):
    with pytest.raises(UserError) as info:
        apply_overrides(load_recipe(name), ["model.normalisation=bytes"])
    assert "normalisation" in str(info.value) and "unit, pixel, paddle" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arithmetic", NORMALISATIONS)
@pytest.mark.parametrize("order", ["float", "uint8_bilinear"])
@pytest.mark.parametrize("hw", [(71, 127), (96, 64)])  # resized, and at its own size
def test_eager_transform_is_the_shared_preprocessing(arithmetic, order, hw):
    """Bit for bit, grey padding of the 96 px canvas included."""
    overrides = [*SMALL_RTMDET, f"model.normalisation={arithmetic}", f"model.resize_order={order}"]
    model = build_model(apply_overrides(load_recipe("rtmdet_ins_tiny"), overrides), 2, weights="none").eval()
    assert (model.input_spec.normalisation, model.input_spec.resize_order) == (arithmetic, order)
    picture = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    ours, sizes = preprocess([picture], model.input_spec)
    image_list, _ = model.transform([torch.from_numpy(picture).permute(2, 0, 1).float() / 255])
    assert [tuple(s) for s in image_list.image_sizes] == sizes
    assert ours.shape == (1, 3, 96, 96) and torch.equal(image_list.tensors, ours)
    if arithmetic != "unit":  # the arithmetic reaches the network's input: the check above can fail
        unit, _ = preprocess([picture], InputSpec(**{**vars(model.input_spec), "normalisation": "unit"}))
        assert not torch.equal(unit, ours)


@pytest.mark.parametrize("arithmetic", NORMALISATIONS)
def test_the_padding_is_grey_normalised_in_the_same_arithmetic(arithmetic):
    """MMDetection pads the uint8 picture with 114 and normalises it with the picture: the padding's value is a
    grey-114 pixel's, whichever arithmetic."""
    spec = InputSpec(16, 32, pad_to_square=True, pad_value=114 / 255, normalisation=arithmetic)
    grey = level_table(spec.mean, spec.std, arithmetic)[:, 114]
    fill = torch.tensor(spec.pad_fill(), dtype=torch.float32)
    assert torch.equal(fill, grey)
    batch, _ = preprocess([np.full((16, 32, 3), 114, np.uint8)], spec)  # at its own size: only padded
    assert batch.shape == (1, 3, 32, 32) and torch.equal(batch, grey[None, :, None, None].expand(1, 3, 32, 32))
    if arithmetic == "pixel":
        assert np.array_equal(fill.numpy(), (np.float32(114) - MEAN_PX) / STD_PX)
        unit = InputSpec(16, 32, pad_to_square=True, pad_value=114 / 255).pad_fill()
        assert not np.array_equal(np.float32(unit), fill.numpy())  # the check above can fail


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("maskrcnn_fast", ["model.resize_order=uint8_bicubic", "model.mask_paste=exact"]),
        ("maskrcnn_fast", []),
        ("mask_rtdetr_fast", ["model.resize_order=uint8_bicubic", "input.resize=stretch"]),
        ("ppyoloe_seg_fast", ["input.resize=stretch"]),
    ],
)
def test_paddle_arithmetic_in_the_eager_transforms_of_paddledetections_architectures(name, overrides):
    """R-CNN (ImageNet mean and std), Mask-RT-DETR and PP-YOLOE-seg (mean 0, std 1: the product by float32(1 / 255)
    alone): the eager transform feeds the network what the shared pre-processing makes of the uint8 picture."""
    overrides = ["input.min_size=96", "input.max_size=96", "model.normalisation=paddle", *overrides]
    model = build_model(apply_overrides(load_recipe(name), overrides), 2, weights="none").eval()
    assert model.input_spec.normalisation == "paddle"
    picture = np.random.default_rng(2).integers(0, 256, (71, 127, 3), dtype=np.uint8)
    ours, sizes = preprocess([picture], model.input_spec)
    image_list, _ = model.transform([torch.from_numpy(picture).permute(2, 0, 1).float() / 255])
    assert [tuple(s) for s in image_list.image_sizes] == sizes
    h, w = sizes[0]
    assert torch.equal(image_list.tensors[..., :h, :w], ours[..., :h, :w])
    unit, _ = preprocess([picture], InputSpec(**{**vars(model.input_spec), "normalisation": "unit"}))
    assert not torch.equal(unit[..., :h, :w], ours[..., :h, :w])  # the check above can fail


def _meta(**input_keys) -> dict:
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3, "size_divisible": 32}
    return {"input": {"min_size": 256, "max_size": 256, **input_keys}, "preprocess": pre}


@pytest.mark.parametrize("arithmetic", NORMALISATIONS)
def test_exports_carry_the_arithmetic_and_older_ones_normalise_on_unit_values(arithmetic):
    info = {"class_names": ["a"], "category_ids": [1], "recipe": {"name": "x"}}
    spec = InputSpec(96, 128, size_rounding="round", normalisation=arithmetic)
    meta = build_metadata(info, spec, graph={})
    assert meta["input"]["normalisation"] == arithmetic
    assert spec_from_metadata(meta) == spec
    if arithmetic == "pixel":
        assert "123.675" in meta["preprocess"]["normalise"] and "57.12" in meta["preprocess"]["normalise"]
    assert spec_from_metadata(_meta()).normalisation == "unit"  # made before the key existed
    with pytest.raises(UserError, match=r"model\.onnx.*input\.normalisation 'bytes'"):
        spec_from_metadata(_meta(normalisation="bytes"), "model.onnx")
