"""The resize order: the uint8 picture resized by OpenCV and then normalised (MMDetection's and PaddleDetection's
``Resize``), as a model option that the shared pre-processing, the eager transform and exported models follow; the
default stays torchvision's float order. ``float_opencv_bilinear``: normalised first, then resized in float by
OpenCV (PaddleDetection's SOLOv2 EvalReader)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instaseg.errors import UserError
from instaseg.export.metadata import build_metadata
from instaseg.inference.preprocess import preprocess
from instaseg.models.detector import InputSpec
from instaseg.models.factory import build_model
from instaseg.models.metadata import spec_from_metadata
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.utils.normalisation import normalised
from instaseg.utils.resize_rule import opencv_resized, uint8_picture

INTERPOLATIONS = {"uint8_bilinear": cv2.INTER_LINEAR, "uint8_bicubic": cv2.INTER_CUBIC}
SMALL_RTMDET = ["input.min_size=96", "input.max_size=96", "model.widen=0.0625", "model.neck_channels=16"]
FAST_AT_96 = ["input.min_size=96", "input.max_size=96"]


def _picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _std(spec: InputSpec) -> torch.Tensor:
    return torch.tensor(spec.std, dtype=torch.float32)[:, None, None]


def _normalised(picture: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """(uint8 / 255 - mean) / std as [3,H,W], written out."""
    image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(spec.mean, dtype=torch.float32)[:, None, None]
    return (image - mean) / _std(spec)


@pytest.mark.parametrize("order", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("hw", [(71, 127), (212, 187), (300, 41)])
def test_the_uint8_order_is_cv2_resize_bit_for_bit(order, hw):
    """Enlarged and shrunk: the resized picture is cv2.resize's, and the network input its normalisation."""
    picture = _picture(*hw)
    spec = InputSpec(96, 128, size_rounding="round", resize_order=order)
    size = spec.resized_size(*hw)
    expected = cv2.resize(picture, (size[1], size[0]), interpolation=INTERPOLATIONS[order])
    assert np.array_equal(opencv_resized(picture, size, order), expected)
    batch, sizes = preprocess([picture], spec)
    assert sizes == [size]
    assert torch.equal(batch[0, :, : size[0], : size[1]], _normalised(expected, spec))
    float_order, _ = preprocess([picture], InputSpec(96, 128, size_rounding="round"))
    assert (float_order - batch).abs().max() > 0.01  # the orders differ: the check above can fail


@pytest.mark.parametrize("hw", [(71, 127), (212, 187), (300, 41)])
def test_the_float_opencv_order_is_paddledetections_resize_of_the_normalised_picture(hw):
    """NormalizeImage, then Resize(interp 1) as PaddleDetection calls cv2.resize (scale factors new / old, on the
    float32 picture): the network input bit for bit; torch's float bilinear differs."""
    picture = _picture(*hw)
    spec = InputSpec(96, 128, size_rounding="round", resize_order="float_opencv_bilinear", normalisation="paddle")
    size = spec.resized_size(*hw)
    plain = normalised(torch.from_numpy(picture).permute(2, 0, 1).float() / 255, spec.mean, spec.std, "paddle")
    hwc = plain.permute(1, 2, 0).contiguous().numpy()
    expected = cv2.resize(hwc, None, None, fx=size[1] / hw[1], fy=size[0] / hw[0], interpolation=cv2.INTER_LINEAR)
    batch, sizes = preprocess([picture], spec)
    assert sizes == [size] and expected.shape[:2] == size
    assert torch.equal(batch[0, :, : size[0], : size[1]], torch.from_numpy(expected).permute(2, 0, 1))
    float_order, _ = preprocess([picture], InputSpec(96, 128, size_rounding="round", normalisation="paddle"))
    assert not torch.equal(float_order, batch)  # the orders differ (by ~1e-5 here): the check above can fail


def test_the_default_is_the_float_order_unchanged():
    spec = InputSpec(96, 128)
    assert spec.resize_order == "float"
    picture = _picture(71, 127)
    batch, (size,) = preprocess([picture], spec)
    resized = F.interpolate(_normalised(picture, spec)[None], size=size, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(batch[0, :, : size[0], : size[1]], resized, atol=1e-6, rtol=0)
    for name in ("maskrcnn_fast", "cascade_maskrcnn_fast", "rtmdet_ins_tiny_fast", "solov2_fast"):
        model = build_model(apply_overrides(load_recipe(name), FAST_AT_96), 2, weights="none")
        assert model.input_spec.resize_order == "float", name
    with pytest.raises(ValueError, match="resize order"):
        InputSpec(96, 128, resize_order="uint8_nearest")


def test_published_recipes_resize_as_their_publisher():
    for name in ("rtmdet_ins_tiny", "rtmdet_ins_s", "rtmdet_ins_m", "rtmdet_ins_l", "rtmdet_ins_x"):
        assert load_recipe(name)["model"]["resize_order"] == "uint8_bilinear", name  # mmcv.imresize 'bilinear'
    paddlex = ["maskrcnn_r50_fpn_paddlex", "maskrcnn_r50vd_fpn", "maskrcnn_r101_fpn", "maskrcnn_r101vd_fpn"]
    paddlex += ["maskrcnn_x101vd_fpn", "maskrcnn_r50_c4", "cascade_maskrcnn_r50_fpn", "cascade_maskrcnn_r50vd_fpn"]
    for name in paddlex:
        assert load_recipe(name)["model"]["resize_order"] == "uint8_bicubic", name  # Resize interp: 2
    assert load_recipe("maskrcnn_r50_fpn")["model"].get("resize_order", "float") == "float"  # torchvision's model
    assert load_recipe("solov2_r50_fpn")["model"]["resize_order"] == "uint8_bilinear"  # MMDetection's
    # PaddleDetection's SOLOv2 EvalReader: NormalizeImage before Resize
    assert load_recipe("solov2_r50_fpn_paddlex")["model"]["resize_order"] == "float_opencv_bilinear"


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("rtmdet_ins_tiny", SMALL_RTMDET),
        ("maskrcnn_fast", [*FAST_AT_96, "model.resize_order=uint8_bicubic", "model.size_rounding=round"]),
        ("maskrcnn_fast", [*FAST_AT_96, "model.resize_order=uint8_bilinear", "model.mask_paste=exact"]),
        ("ppyoloe_seg_fast", [*FAST_AT_96, "model.resize_order=uint8_bicubic", "input.resize=stretch"]),
        ("solov2_fast", [*FAST_AT_96, "model.resize_order=float_opencv_bilinear", "model.normalisation=paddle"]),
        ("ppyoloe_seg_fast", [*FAST_AT_96, "model.resize_order=float_opencv_bilinear", "input.resize=stretch"]),
    ],
)
def test_eager_transform_is_the_shared_preprocessing(name, overrides):
    """The eager model's transform, given the picture as floats, feeds the network what the predictor's
    pre-processing makes of the uint8 picture, bit for bit; boxes and masks of a training target follow."""
    model = build_model(apply_overrides(load_recipe(name), overrides), 2, weights="none").eval()
    assert model.input_spec.resize_order != "float"
    picture = _picture(71, 127)
    ours, sizes = preprocess([picture], model.input_spec)
    image_list, _ = model.transform([torch.from_numpy(picture).permute(2, 0, 1).float() / 255])
    assert [tuple(s) for s in image_list.image_sizes] == sizes
    h, w = sizes[0]
    assert torch.equal(image_list.tensors[..., :h, :w], ours[..., :h, :w])
    model.transform.train()
    try:
        target = {"boxes": torch.tensor([[0.0, 0.0, 127.0, 71.0]]), "labels": torch.tensor([1]),
                  "masks": torch.ones(1, 71, 127, dtype=torch.uint8)}  # fmt: skip
        _, targets = model.transform([torch.from_numpy(picture).permute(2, 0, 1).float() / 255], [target])
    finally:
        model.transform.eval()
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.0, 0.0, float(w), float(h)]]))
    assert targets[0]["masks"].shape == (1, h, w) and bool(targets[0]["masks"].all())


def test_a_float_picture_takes_the_uint8_order_on_its_grey_levels():
    """A float picture is rounded to the nearest of the 256 levels first: one divided by 255 exactly as the uint8
    picture; one between levels as its rounded levels."""
    spec = InputSpec(96, 128, resize_order="uint8_bilinear")
    picture = _picture(71, 127)
    as_float = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    assert np.array_equal(uint8_picture(as_float), picture)
    assert torch.equal(preprocess([as_float], spec)[0], preprocess([picture], spec)[0])
    between = (as_float + 0.4 / 255).clamp(0, 1)
    assert torch.equal(preprocess([between], spec)[0], preprocess([picture], spec)[0])
    same = InputSpec(71, 127, resize_order="uint8_bilinear")  # at its own size: normalised as it is, not rounded
    assert same.resized_size(71, 127) == (71, 127)
    kept = preprocess([between], same)[0][0, :, :71, :127]
    mean = torch.tensor(same.mean, dtype=torch.float32)[:, None, None]
    assert torch.equal(kept, (between - mean) / _std(same)) and not torch.equal(kept, _normalised(picture, same))


def _meta(**input_keys) -> dict:
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3, "size_divisible": 32}
    return {"input": {"min_size": 256, "max_size": 256, **input_keys}, "preprocess": pre}


def test_exports_carry_the_order_and_older_ones_resize_in_float():
    info = {"class_names": ["a"], "category_ids": [1], "recipe": {"name": "x"}}
    spec = InputSpec(96, 128, size_rounding="round", resize_order="uint8_bicubic")
    meta = build_metadata(info, spec, graph={})
    assert meta["input"]["resize_order"] == "uint8_bicubic" and "INTER_CUBIC" in meta["preprocess"]["resize"]
    assert spec_from_metadata(meta) == spec
    spec = InputSpec(96, 128, size_rounding="round", resize_order="float_opencv_bilinear", normalisation="paddle")
    meta = build_metadata(info, spec, graph={})
    assert "normalised float32 picture by OpenCV" in meta["preprocess"]["resize"]
    assert spec_from_metadata(meta) == spec
    assert spec_from_metadata(_meta()).resize_order == "float"  # made before the key existed
    with pytest.raises(UserError, match=r"model\.onnx.*resize_order"):
        spec_from_metadata(_meta(resize_order="uint8_area"), "model.onnx")


def test_the_predictor_of_a_checkpoint_and_of_its_export_resize_in_the_uint8_order(tmp_path):
    pytest.importorskip("onnxruntime")
    from instaseg.export import export_model
    from instaseg.inference.predictor import create_model
    from instaseg.models.checkpoint import save_checkpoint

    recipe = apply_overrides(load_recipe("rtmdet_ins_tiny"), SMALL_RTMDET)
    model = build_model(recipe, 2, weights="none").eval()
    path = save_checkpoint(tmp_path / "model.pt", model, recipe, ["a", "b"], [1, 2])
    exported = export_model(path, format="onnx", out=tmp_path, dynamic=True)
    assert exported["metadata"]["input"]["resize_order"] == "uint8_bilinear"
    assert exported["metadata"]["input"]["normalisation"] == "pixel"  # and in MMDetection's arithmetic
    for source in (path, exported["path"]):
        assert create_model(source).backend.spec == model.input_spec


def test_training_on_pictures_the_data_pipeline_resized_is_unchanged():
    """With the engine's sizes kept (``keep_training_sizes``) the eager transform only normalises: a float picture
    off the uint8 grid (photometric augmentation) is not rounded."""
    model = build_model(apply_overrides(load_recipe("rtmdet_ins_tiny"), SMALL_RTMDET), 2, weights="none")
    model.keep_training_sizes()
    model.train()
    image = torch.from_numpy(_picture(71, 127)).permute(2, 0, 1).float() / 255 + 0.4 / 255
    image_list, _ = model.transform([image.clamp(0, 1)])
    spec = model.input_spec
    expected = normalised(image.clamp(0, 1), spec.mean, spec.std, spec.normalisation)  # MMDetection's arithmetic
    assert torch.equal(image_list.tensors[0, :, :71, :127], expected)
