"""``input.resize: stretch`` (PaddleDetection's keep_ratio: false): every image becomes a max_size square, in
training, in the predictor's shared pre-processing, in checkpoints and export metadata, in every backend and in
tiling; an exported stretched model gives the eager model's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import instaseg
from instaseg.data.synthetic import generate_synthetic, synth_image
from instaseg.engine.train import train
from instaseg.evaluation.parity import compare_results
from instaseg.inference.preprocess import preprocess
from instaseg.inference.tiling import shrink_for_input
from instaseg.models.checkpoint import load_checkpoint, save_checkpoint
from instaseg.models.factory import model_from_checkpoint
from tiny import TINY

CLASSES = ["cat", "dog"]
STRETCH = ["input.min_size=64", "input.max_size=64", "input.resize=stretch", "eval.score_threshold=0.05",
           "eval.max_dets=20"]  # fmt: skip


@pytest.fixture(scope="module")
def stretched(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> Path:
    recipe, model = tiny_maskrcnn(len(CLASSES), STRETCH)
    with torch.no_grad():  # scores spread apart and follow the picture (as tests/test_export.py's model)
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(10.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(3.0)
    return save_checkpoint(tmp_path_factory.mktemp("stretch") / "tiny.pt", model, recipe, CLASSES, [1, 2])


def _wide() -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([synth_image(1, 64, 0)[0], synth_image(2, 64, 0)[0]], axis=1)[:50])


def test_the_model_and_the_predictor_stretch_alike(stretched: Path) -> None:
    model, info = model_from_checkpoint(stretched)
    spec = model.input_spec
    assert not spec.keep_ratio and info["input"]["resize"] == "stretch"
    image = _wide()  # 50 x 128
    batch, sizes = preprocess([image], spec)
    assert sizes == [(64, 64)] and batch.shape[-2:] == (64, 64)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    own = model.transform([tensor])[0]  # torchvision's transform with its fixed size
    assert own.image_sizes == [(64, 64)]
    torch.testing.assert_close(own.tensors, batch, atol=1e-5, rtol=0)


def test_eager_prediction_maps_boxes_back_on_both_axes(stretched: Path) -> None:
    model, _ = model_from_checkpoint(stretched)
    image = _wide()
    result = next(instaseg.create_model(stretched, threshold=0.0).predict(image))
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        direct = model([tensor])[0]  # the module's own eval path: resize, detect, scale boxes back per axis
    assert len(result) > 0 and result.masks.shape[1:] == image.shape[:2]
    keep = direct["scores"] >= 0.05
    np.testing.assert_allclose(result.boxes, direct["boxes"][keep].numpy(), atol=1e-3)


def test_exported_stretched_model_gives_the_eager_results(stretched: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from instaseg.export import export_model

    eager = instaseg.create_model(stretched, threshold=0.0)
    path = export_model(stretched, format="onnx", out=tmp_path, dynamic=False)["path"]
    predictor = instaseg.create_model(path, threshold=0.0)
    meta = predictor.backend.meta
    assert meta["input"]["resize"] == "stretch" and not predictor.backend.spec.keep_ratio
    assert "not kept" in meta["preprocess"]["resize"]
    tall = np.ascontiguousarray(np.concatenate([synth_image(3, 64, 0)[0], synth_image(4, 64, 0)[0]], axis=0)[:, :40])
    for image in (_wide(), tall, synth_image(0, 64, 0)[0]):
        ref, got = next(eager.predict(image)), next(predictor.predict(image))
        agree = compare_results(ref, got, 0.1)
        assert len(ref) > 0 and agree.matched > 0 and agree.unmatched == 0
        assert agree.max_box_gap <= 1.0 and agree.min_mask_iou >= 0.99


def test_tiling_shrinks_each_side_of_a_stretched_image_apart() -> None:
    image = np.zeros((300, 80, 3), dtype=np.uint8)
    assert shrink_for_input(image, 64, 64, keep_ratio=False).shape[:2] == (64, 64)
    assert shrink_for_input(image, 128, 128, keep_ratio=False).shape[:2] == (128, 80)  # the narrow side stays
    assert shrink_for_input(image, 64, 64).shape[:2] == (64, 17)  # keep_ratio: both by the same scale


def test_training_stretches_and_records_the_rule(tmp_path: Path) -> None:
    """A stretched recipe with the Mask-RT-DETR augmentations (colour, zoom-out, IoU crop, a square side drawn per
    batch) trains through the engine, and its checkpoint rebuilds a stretching model."""
    data = generate_synthetic(tmp_path / "data", num_images=6, img_size=64, seed=0)
    overrides = [*TINY, "input.resize=stretch", "train.batch_multiscale=[64, 96]", "train.zoom_out=0.5",
                 "train.iou_crop=0.8", "train.photometric=distort", "train.scale_jitter=null"]  # fmt: skip
    result = train("maskrcnn_fast", data, epochs=1, device="cpu", out=tmp_path / "run", overrides=overrides)
    assert result["done_flag"]
    info = load_checkpoint(result["paths"]["best"])
    assert info["input"] == {"min_size": 64, "max_size": 64, "resize": "stretch"}
    model, _ = model_from_checkpoint(result["paths"]["best"])
    assert not model.input_spec.keep_ratio
