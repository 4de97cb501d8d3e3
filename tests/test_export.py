"""Export to ONNX / OpenVINO: parity with eager through the same predictor, and the cases exporters get wrong
(an image without detections inside a batch, input sizes other than the export size, masks in every output).

The fast tests use a random-init `maskrcnn_fast` at 64 px whose box classifier is scaled so scores spread out
(no ties that rounding could reorder) and depend on the picture: a flat grey picture scores below the in-graph cut
and yields no detection at all. The slow test trains a tiny model and compares COCO AP per precision and INT8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

import instaseg  # noqa: E402
from instaseg.cli import main  # noqa: E402
from instaseg.data.synthetic import synth_image  # noqa: E402
from instaseg.errors import UserError  # noqa: E402
from instaseg.evaluation.parity import compare_results  # noqa: E402
from instaseg.export import export_model  # noqa: E402

CLASSES = ["cat", "dog"]
CATEGORY_IDS = [3, 7]
MIN_SCORE = 0.1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> Path:
    return _tiny_checkpoint(tiny_maskrcnn, tmp_path_factory.mktemp("export") / "tiny.pt")


def _tiny_checkpoint(tiny_maskrcnn, path: Path, *overrides: str) -> Path:
    from instaseg.models.checkpoint import save_checkpoint

    recipe, model = tiny_maskrcnn(
        len(CLASSES),
        ["input.min_size=64", "input.max_size=96", "eval.score_threshold=0.05", "eval.max_dets=20", *overrides],
    )
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)  # scores follow the picture, spread apart
        model.roi_heads.box_predictor.cls_score.bias[0] += 5.0  # ... and a flat picture scores below 0.05
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(10.0)  # boxes move away from the proposals
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(3.0)  # masks with structure
    return save_checkpoint(path, model, recipe, CLASSES, CATEGORY_IDS)


@pytest.fixture(scope="module")
def exported(ckpt: Path) -> dict[str, Path]:
    """ONNX through the CLI, OpenVINO through the API, both with dynamic input sizes."""
    out = ckpt.parent / "models"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--dynamic", "--out", str(out)]) == 0
    ov = export_model(ckpt, format="openvino", out=out, dynamic=True)
    return {"onnx": out / "model.onnx", "openvino": Path(ov["path"])}


def pictures() -> list[np.ndarray]:
    """Shapes pictures at the export size and at other sizes and aspect ratios."""
    square = synth_image(0, 64, 0)[0]
    wide = np.ascontiguousarray(np.concatenate([synth_image(1, 64, 0)[0], synth_image(2, 64, 0)[0]], axis=1)[:50])
    tall = np.ascontiguousarray(np.concatenate([synth_image(3, 64, 0)[0], synth_image(4, 64, 0)[0]], axis=0)[:, :40])
    big = np.kron(synth_image(5, 64, 0)[0], np.ones((3, 2, 1), dtype=np.uint8))  # 192x128, resized down
    return [square, wide, tall, big]


GREY = np.full((60, 80, 3), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def eager(ckpt: Path):
    return instaseg.create_model(ckpt, threshold=0.0)


def test_metadata_travels_with_the_model(exported: dict[str, Path], ckpt: Path) -> None:
    import onnx
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    rt = ov.Core().read_model(str(exported["openvino"])).get_rt_info(["instaseg", "class_names"]).astype(str)
    assert '"dog"' in props["class_names"] and '"dog"' in rt
    for path in exported.values():
        predictor = instaseg.create_model(path)
        meta = predictor.backend.meta
        assert predictor.class_names == CLASSES and predictor.category_ids == CATEGORY_IDS
        # Mask R-CNN sizes, resizes and normalises as torchvision: floored, in float, on [0, 1]
        expected = {"min_size": 64, "max_size": 96, "resize": "keep_ratio", "size_rounding": "floor"}
        assert meta["input"] == {**expected, "resize_order": "float", "normalisation": "unit"}
        assert meta["box_score_thresh"] == 0.05
        assert meta["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
        assert meta["graph"]["dynamic"] and meta["precision"] == "fp32" and meta["gflops"] > 0
        assert meta["graph"]["mask_paste"] == "torchvision"  # the model's, as an exact one's says exact
        assert predictor.threshold == meta["score_threshold"]
    # fp32 is asked for explicitly: OpenVINO's own default on bf16-capable CPUs would be bf16
    assert "float32" in str(instaseg.create_model(exported["openvino"]).backend.inference_precision)


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_fp32_parity_with_eager_at_every_size(kind: str, exported: dict[str, Path], eager) -> None:
    predictor = instaseg.create_model(exported[kind], threshold=0.0)
    assert predictor.backend.name == {"onnx": "onnxruntime", "openvino": "openvino"}[kind]
    for image in pictures():
        ref, got = next(eager.predict(image)), next(predictor.predict(image))
        assert len(ref) > 0 and got.image_size == ref.image_size == image.shape[:2]
        agree = compare_results(ref, got, MIN_SCORE)
        assert agree.matched > 0 and agree.unmatched == 0
        assert agree.max_box_gap <= 1.0 and agree.min_mask_iou >= 0.99
        # masks are in the output, pasted at the picture's size, and not empty
        assert len(got.rles) == len(got) and got.masks.shape == (len(got), *image.shape[:2])
        assert got.masks.any(axis=(1, 2)).mean() > 0.5
        assert (got.boxes[:, 2] <= image.shape[1]).all() and (got.boxes[:, 3] <= image.shape[0]).all()


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_batch_with_an_image_without_detections(kind: str, exported: dict[str, Path], eager) -> None:
    predictor = instaseg.create_model(exported[kind], threshold=0.0)
    images = [pictures()[1], GREY, pictures()[0]]
    assert len(next(eager.predict(GREY))) == 0
    batched = list(predictor.predict(images, batch_size=3))
    assert [len(r) > 0 for r in batched] == [True, False, True]
    assert batched[1].masks.shape == (0, 60, 80) and batched[1].json["boxes"] == []
    for image, result in zip(images, batched, strict=True):  # each image as if it were alone
        alone = next(predictor.predict(image))
        np.testing.assert_allclose(result.boxes, alone.boxes, atol=1e-4)
        assert result.rles == alone.rles


def test_openvino_specialises_repeated_input_shapes(exported: dict[str, Path], eager, monkeypatch) -> None:
    """A dynamic OpenVINO graph runs a static copy per input shape once that pays (at once with "first", after
    enough time at the shape with "auto", never with "off"), at most MAX_STATIC shapes, with unchanged results."""
    from instaseg.inference.backends import openvino as ov_backend

    images = pictures()
    first = instaseg.create_model(exported["openvino"], threshold=0.0)
    first.backend.static_shapes = "first"
    off = instaseg.create_model(exported["openvino"], threshold=0.0)
    off.backend.static_shapes = "off"
    for image in images:
        ref, got, plain = next(eager.predict(image)), next(first.predict(image)), next(off.predict(image))
        agree = compare_results(ref, got, MIN_SCORE)
        assert agree.matched > 0 and agree.unmatched == 0 and agree.min_mask_iou >= 0.99
        np.testing.assert_allclose(got.boxes, plain.boxes, atol=1e-3)
    shapes = {s[-2:] for s in first.backend.specialised}
    assert len(shapes) == len(images) and not off.backend.specialised  # four sizes, four padded shapes

    auto = instaseg.create_model(exported["openvino"], threshold=0.0)
    assert auto.backend.static_shapes == "auto"
    auto.backend.compile_seconds = 1e9  # a compile that never pays: always dynamic
    for _ in range(3):
        next(auto.predict(images[0]))
    assert not auto.backend.specialised and len(auto.backend.seconds_at) == 1
    auto.backend.compile_seconds = 0.0  # a compile that pays at once
    next(auto.predict(images[0]))
    assert len(auto.backend.specialised) == 1

    monkeypatch.setattr(ov_backend, "MAX_STATIC", 2)
    capped = instaseg.create_model(exported["openvino"], threshold=0.0)
    capped.backend.static_shapes = "first"
    for image in images:
        next(capped.predict(image))
    assert len(capped.backend.specialised) == 2


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_tiled_prediction_through_exported_models(kind: str, exported: dict[str, Path], ckpt: Path) -> None:
    """Tiling lives in the predictor: an exported model on tiles gives the eager model's tiled result."""
    image = pictures()[3]  # 192x128: tiles of 64 px plus the whole image
    eager_tiled = instaseg.create_model(ckpt, threshold=0.0, tile=64)
    ref = next(eager_tiled.predict(image))
    whole = next(instaseg.create_model(ckpt, threshold=0.0, tile="off").predict(image))
    assert ref.rles != whole.rles  # the tiles changed the result: the comparison below is about tiling
    got = next(instaseg.create_model(exported[kind], threshold=0.0, tile=64).predict(image))
    agree = compare_results(ref, got, MIN_SCORE)
    assert agree.matched > 0 and agree.unmatched == 0
    assert agree.max_box_gap <= 1.0 and agree.min_mask_iou >= 0.99


def test_the_mask_paste_travels_with_the_model(exported: dict[str, Path], tiny_maskrcnn, tmp_path: Path) -> None:
    """A model that pastes its masks exactly (``mask_paste: exact``, PaddleDetection's way) says so in the graph's
    metadata and the exported predictor pastes as the eager one; an export from before the key pastes as
    torchvision does."""
    from instaseg.inference.backends.exported import raw_detections

    ckpt = _tiny_checkpoint(tiny_maskrcnn, tmp_path / "exact.pt", "model.mask_paste=exact")
    path = export_model(ckpt, format="onnx", out=tmp_path / "models", dynamic=True)["path"]
    eager, predictor = instaseg.create_model(ckpt, threshold=0.0), instaseg.create_model(path, threshold=0.0)
    assert predictor.backend.meta["graph"]["mask_paste"] == "exact"
    for image in pictures()[:2]:
        ref, got = next(eager.predict(image)), next(predictor.predict(image))
        agree = compare_results(ref, got, MIN_SCORE)
        assert agree.matched > 0 and agree.unmatched == 0 and agree.min_mask_iou >= 0.99
    predictor.backend.graph.pop("mask_paste")  # read as an export from before the key
    old = compare_results(next(eager.predict(pictures()[0])), next(predictor.predict(pictures()[0])), MIN_SCORE)
    assert old.matched > 0 and old.min_mask_iou < 0.9
    outputs = (np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 28, 28)))
    assert raw_detections(*outputs, {}).mask_paste == "torchvision"
    assert raw_detections(*outputs, {"mask_paste": "exact"}).mask_paste == "exact"


def test_static_graph_takes_any_input_size(ckpt: Path, tmp_path: Path) -> None:
    """A fixed-size graph: every resized picture is padded into the export square, whatever its shape."""
    result = export_model(ckpt, format="onnx", out=tmp_path)
    predictor = instaseg.create_model(result["path"], threshold=0.0)
    assert predictor.backend.graph == {**predictor.backend.graph, "dynamic": False, "height": 96, "width": 96}
    for image in [*pictures(), GREY]:
        got = next(predictor.predict(image))
        assert got.masks.shape == (len(got), *image.shape[:2])
        assert (len(got) > 0) == (image is not GREY)


def test_unsupported_choices_are_user_errors(ckpt: Path, tmp_path: Path, cli) -> None:
    with pytest.raises(UserError, match="openvino"):
        export_model(ckpt, format="onnx", precision="bf16", out=tmp_path)
    with pytest.raises(UserError, match="calib"):
        export_model(ckpt, format="openvino", int8=True, out=tmp_path)
    code, _, err = cli("export", "--checkpoint", str(tmp_path / "missing.pt"), "--format", "onnx")
    assert code == 2 and "missing.pt" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "foreign.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="ONNX"):
        instaseg.create_model(tmp_path / "foreign.onnx")
    assert not list(tmp_path.glob("model*"))  # nothing half-written is left behind


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """maskrcnn_fast at 64 px fitted for a few hundred SGD steps on 8 synthetic pictures (evaluated on them):
    a model whose detections and COCO AP are real, small enough to train inside a test."""
    from instaseg.data.coco import load_dataset
    from instaseg.data.dataset import InstanceDataset
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    root = tmp_path_factory.mktemp("trained")
    data = generate_synthetic(root / "data", num_images=10, img_size=64, seed=0)
    train = load_dataset(data)["train"]
    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), ["input.min_size=64", "input.max_size=64"])
    model = build_model(recipe, len(train.class_names), weights="none").train()
    items = [InstanceDataset(train, None, train=True)[i] for i in range(len(train.images))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    for step in range(300):
        batch = [items[(step * 4 + j) % len(items)] for j in range(4)]
        targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for _, t in batch]
        loss = sum(model([image for image, _ in batch], targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ckpt = save_checkpoint(root / "trained.pt", model, recipe, train.class_names, train.category_ids)
    return ckpt, data


@pytest.mark.slow
def test_trained_model_ap_per_backend_and_precision(trained: tuple[Path, Path]) -> None:
    """fp32 exports score the eager model's COCO mask AP within 0.2 points, INT8 within 1 point; fp16 and bf16 are
    measured and printed (run with -s), and must stay within 5 points."""
    from instaseg.data.coco import load_dataset
    from instaseg.evaluation.parity import predictor_metrics

    ckpt, data = trained
    gt = load_dataset(data)["train"]
    eager = predictor_metrics(instaseg.create_model(ckpt, threshold=0.0), gt)
    assert eager["mask_AP"] > 0.1  # the model learned something: parity below is not about empty outputs
    variants = {
        "onnx fp32": {"format": "onnx"},
        "openvino fp32": {"format": "openvino"},
        "openvino bf16": {"format": "openvino", "precision": "bf16"},
        "openvino fp16": {"format": "openvino", "precision": "fp16"},
        "openvino int8": {"format": "openvino", "int8": True, "calib_data": data / "images"},
    }
    print(f"\neager: mask AP {eager['mask_AP'] * 100:.2f}, box AP {eager['box_AP'] * 100:.2f}")
    for name, options in variants.items():
        path = export_model(ckpt, out=ckpt.parent / "models", dynamic=True, **options)["path"]
        metrics = predictor_metrics(instaseg.create_model(path, threshold=0.0), gt)
        drop = (eager["mask_AP"] - metrics["mask_AP"]) * 100
        print(f"{name}: mask AP {metrics['mask_AP'] * 100:.2f} ({-drop:+.2f}), box AP {metrics['box_AP'] * 100:.2f}")
        # INT8 held to the bar of `--max-ap-drop`'s default (measured: 23.68 -> 23.93 with OpenVINO 2026.4.1 / NNCF 3.4)
        assert abs(drop) <= (0.2 if "fp32" in name else 1.0 if "int8" in name else 5.0)


def test_calibration_from_a_dataset_root_takes_its_train_images(tmp_path: Path) -> None:
    from instaseg.data.coco import load_dataset
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.export.quantize import calibration_images
    from instaseg.utils.images import read_image

    data = generate_synthetic(tmp_path / "data", num_images=10, img_size=32, seed=0)
    splits = load_dataset(data)
    train = [read_image(splits["train"].image_path(r)) for r in splits["train"].images]
    val = [read_image(splits["val"].image_path(r)) for r in splits["val"].images]
    picked = calibration_images(data, count=100)
    assert len(picked) == len(train) == 8
    assert all(any(np.array_equal(p, t) for t in train) for p in picked)
    assert not any(np.array_equal(p, v) for p in picked for v in val)
    assert len(calibration_images(data / "images", count=100)) == 10  # a plain folder: every image in it
    assert len(calibration_images(data, count=3)) == 3


def test_export_without_the_deploy_extra_names_it(ckpt: Path, tmp_path: Path, cli, monkeypatch) -> None:
    """Installed without `instaseg[deploy]`, export says what to install in one line and exits 2."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    code, out, err = cli("export", "--checkpoint", ckpt, "--out", tmp_path / "x")
    assert code == 2 and "instaseg[deploy]" in err and "onnx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_int8_keeps_masks_when_a_calibration_image_has_no_detection(ckpt: Path, tmp_path: Path) -> None:
    """A calibration image without detections runs the mask branch on an empty tensor; NNCF then recorded ranges of
    zero for every quantizer after the RoI pooling and INT8 masks came out flat. Such images do not calibrate."""
    import cv2

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, image in enumerate([GREY, *pictures()]):  # the grey picture yields no detection (see `ckpt`)
        cv2.imwrite(str(folder / f"{i}.png"), image[:, :, ::-1])
    result = export_model(ckpt, format="openvino", int8=True, calib_data=folder, out=tmp_path, dynamic=True)
    report = result["report"]
    assert report["calibration_images"] == 4 and report["calibration_images_without_detections"] == 1
    assert report["accuracy"] is None and not report["float_layers"]  # plain quantization: no validation images
    import openvino as ov

    mask_branch = [  # the quantizers feeding the mask head's convolutions: their ranges were [0, 8e-5]
        op for op in ov.Core().read_model(result["path"]).get_ops()
        if op.get_type_name() == "FakeQuantize" and "/mask_head/" in op.get_friendly_name()
    ]
    highs = [float(np.abs(op.input_value(2).get_node().get_data()).max()) for op in mask_branch]
    assert mask_branch and min(highs) > 0.01


def test_int8_export_under_accuracy_control_reports_ap(ckpt: Path, tmp_path: Path, cli) -> None:
    """A dataset root as --calib-data: its train split calibrates, its val split keeps mask AP within the drop;
    the report (printed and written beside the model) gives AP before and after, float layers, sizes and speed."""
    import json

    from instaseg.data.synthetic import SynthStyle, generate_synthetic

    data = generate_synthetic(tmp_path / "data", num_images=10, img_size=64, seed=0, style=SynthStyle(num_classes=2))
    for split in ("train", "val"):  # the checkpoint's classes and ids
        path = data / "annotations" / f"instances_{split}.json"
        coco = json.loads(path.read_text())
        ids = {c["id"]: new for c, new in zip(coco["categories"], CATEGORY_IDS, strict=True)}
        coco["categories"] = [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CLASSES, strict=True)]
        for a in coco["annotations"]:
            a["category_id"] = ids[a["category_id"]]
        path.write_text(json.dumps(coco))
    args = ["--format", "openvino", "--int8", "--calib-data", data, "--max-ap-drop", "0.5", "--out", tmp_path / "m"]
    code, out, err = cli("export", "--checkpoint", ckpt, *args)
    assert code == 0, err
    report = json.loads((tmp_path / "m" / "model_int8.report.json").read_text())
    accuracy = report["accuracy"]
    assert accuracy["images"] == 2 and set(accuracy["fp32"]) == set(accuracy["int8"]) == {"mask_AP", "box_AP"}
    assert report["max_ap_drop"] == 0.5 and report["holds"] and report["mask_ap_drop"] <= 0.5
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"] and report["network_ms"]["int8"] > 0
    assert report["settings"]["why"] and report["quantizable_layers"] > len(report["float_layers"])
    assert f"mask AP {accuracy['fp32']['mask_AP']:.1f} -> {accuracy['int8']['mask_AP']:.1f}" in out
    assert "report: " in out and "in float" in out
