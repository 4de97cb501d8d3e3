"""High-performance mode (`--backend auto`): the decision rule, the measured table, its cache, the CLI faces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from instaseg.deploy import autobackend  # noqa: E402
from instaseg.deploy.autobackend import Candidate, Row, choose_backend, decide  # noqa: E402
from instaseg.errors import UserError  # noqa: E402


def _row(label: str, ap: float | None, ms: float | None) -> Row:
    return Row(label, label.split()[0], "fp32", "cpu", mask_ap=ap, box_ap=ap, median_ms=ms)


def test_fastest_within_tolerance_of_the_reference_wins() -> None:
    rows = [
        _row("torch fp32", 40.0, 100.0),
        _row("onnxruntime fp32", 40.0, 60.0),
        _row("openvino bf16", 39.6, 40.0),  # 0.4 below: kept
        _row("openvino int8", 39.4, 20.0),  # 0.6 below: too inaccurate, although fastest
        _row("tensorrt fp16", None, None),  # failed to build or run: never chosen
    ]
    assert decide(rows, tolerance=0.5).label == "openvino bf16"
    assert [r.kept for r in rows] == [True, True, True, False, False]
    assert decide(rows, tolerance=1.0).label == "openvino int8"
    assert decide(rows, tolerance=0.0).label == "onnxruntime fp32"


def test_reference_that_failed_is_an_error() -> None:
    rows = [Row("torch fp32", "torch", "fp32", "cpu", note="out of memory"), _row("onnxruntime fp32", 40.0, 1.0)]
    with pytest.raises(UserError, match="out of memory"):
        decide(rows, tolerance=0.5)


def test_cpu_candidates_start_with_the_reference() -> None:
    found = autobackend.candidates("cpu")
    assert found[0].label == "torch fp32" and found[0].export is None
    assert "onnxruntime fp32" in [c.label for c in found]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> tuple[Path, Path]:
    from instaseg.data.coco import load_dataset
    from instaseg.data.synthetic import generate_synthetic
    from instaseg.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("auto")
    data = generate_synthetic(root / "data", num_images=10, img_size=64, seed=0)
    gt = load_dataset(data)["train"]
    recipe, model = tiny_maskrcnn(len(gt.class_names), ["input.min_size=64", "input.max_size=64"])
    with torch.no_grad():  # detections that follow the picture, so AP is measured on something
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(3.0)
    ckpt = save_checkpoint(root / "model.pt", model, recipe, gt.class_names, gt.category_ids)
    return ckpt, data


def test_choice_is_measured_then_read_from_the_cache(model_and_data, monkeypatch, cli) -> None:
    ckpt, data = model_and_data
    two = [Candidate("torch fp32", "torch"), Candidate("onnxruntime fp32", "onnxruntime", export={"format": "onnx"})]
    monkeypatch.setattr(autobackend, "candidates", lambda device: two)
    first = choose_backend(ckpt, data, iters=2)
    torch_row, onnx_row = first["rows"]
    assert not first["cached"] and first["images"] == 2  # the val split's 2 images
    assert onnx_row.mask_ap == pytest.approx(torch_row.mask_ap, abs=0.2)  # fp32 export: same accuracy
    assert onnx_row.kept and Path(onnx_row.model).suffix == ".onnx" and Path(onnx_row.model).is_file()
    assert first["choice"].label == min(first["rows"], key=lambda r: r.median_ms).label

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached decision must not measure again")

    monkeypatch.setattr(autobackend, "_measure", no_measuring)
    again = choose_backend(ckpt, data, iters=2)
    assert again["cached"] and again["choice"].label == first["choice"].label
    code, out, _ = cli("benchmark", "--model", ckpt, "--backend", "auto", "--val-data", data, "--iters", "2")
    assert code == 0 and "cached decision" in out and "chosen:" in out


def test_auto_needs_validation_data_and_a_checkpoint(model_and_data, cli, tmp_path: Path) -> None:
    ckpt, data = model_and_data
    code, _, err = cli("predict", "--checkpoint", ckpt, "--input", data / "images", "--backend", "auto")
    assert code == 2 and "--val-data" in err and len(err.strip().splitlines()) == 1
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really")
    code, _, err = cli("benchmark", "--model", onnx, "--backend", "auto", "--val-data", data)
    assert code == 2 and "checkpoint" in err
    code, _, err = cli("benchmark", "--model", ckpt, "--backend", "auto", "torch", "--val-data", data)
    assert code == 2 and "alone" in err


def test_int8_candidate_is_quantized_under_accuracy_control(tmp_path: Path, monkeypatch) -> None:
    """INT8 is exported keeping mask AP on the images the choice is measured on, within the choice's tolerance,
    so it is picked wherever it holds."""
    from instaseg.export import exporter

    seen = {}

    def export_model(checkpoint, out, **options):
        seen.update(options)
        return {"path": str(out / "model_int8.xml")}

    monkeypatch.setattr(exporter, "export_model", export_model)
    int8 = next(c for c in autobackend.candidates("cpu") if c.label == "openvino int8")
    data = tmp_path / "data"
    path = autobackend._model_file(int8, tmp_path / "m.pt", tmp_path, data, {"max_images": 20, "tolerance": 0.5})
    assert path.name == "model_int8.xml"
    assert seen["int8"] and seen["calib_data"] == seen["val_data"] == data
    assert seen["max_ap_drop"] == 0.5 and seen["val_images"] == 20
