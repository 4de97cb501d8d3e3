"""TensorRT engines: the file format everywhere; building and running an engine where a GPU and tensorrt exist.

On a CPU-only machine the GPU test skips; `bench/gpu_check.sh` runs the same path with timings on a GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from instaseg.errors import UserError
from instaseg.models.metadata import ENGINE_MAGIC, pack_engine, unpack_engine

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def test_engine_file_carries_its_metadata() -> None:
    strings = {"class_names": '["a", "b"]', "graph": '{"dynamic": false}'}
    packed = pack_engine(strings, b"\x01\x02engine bytes")
    assert packed.startswith(ENGINE_MAGIC)
    assert unpack_engine(packed, "m.engine") == (strings, b"\x01\x02engine bytes")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not an instaseg TensorRT engine"),
        (b"\x00" * 64, "not an instaseg TensorRT engine"),  # an engine built elsewhere: no metadata
        (ENGINE_MAGIC + (10).to_bytes(8, "little") + b"{not json", "unreadable metadata"),
        (pack_engine({"a": "1"}, b""), "truncated"),  # metadata but no engine after it
    ],
)
def test_foreign_or_damaged_engine_files_are_user_errors(data: bytes, reason: str) -> None:
    with pytest.raises(UserError, match=reason):
        unpack_engine(data, "m.engine")


def test_engine_that_is_not_ours_is_one_line(tmp_path: Path, cli) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 128)
    code, _, err = cli("predict", "--checkpoint", engine, "--input", engine, "--device", "cpu")
    assert code == 2 and "not an instaseg TensorRT engine" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message of machines without TensorRT or a GPU")
def test_export_without_tensorrt_or_gpu_says_what_is_missing(tmp_path: Path, cli, tiny_maskrcnn) -> None:
    from instaseg.models.checkpoint import save_checkpoint

    recipe, model = tiny_maskrcnn(2, ["input.min_size=64", "input.max_size=64"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model, recipe, ["a", "b"], [1, 2])
    code, _, err = cli("export", "--checkpoint", ckpt, "--format", "tensorrt", "--precision", "fp16")
    assert code == 2 and ("tensorrt" in err or "GPU" in err) and len(err.strip().splitlines()) == 1
    code, _, err = cli("export", "--checkpoint", ckpt, "--format", "tensorrt", "--int8", "--calib-data", tmp_path)
    assert code == 2 and "INT8" in err
    assert not (tmp_path / "export").exists()  # nothing half-written


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs tensorrt and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_eager_on_the_gpu(precision: str, tmp_path: Path, tiny_maskrcnn) -> None:
    import instaseg
    from instaseg.data.synthetic import synth_image
    from instaseg.evaluation.parity import compare_results
    from instaseg.export import export_model
    from instaseg.models.checkpoint import save_checkpoint

    recipe, model = tiny_maskrcnn(2, ["input.min_size=128", "input.max_size=128", "eval.score_threshold=0.05"])
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(3.0)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, recipe, ["a", "b"], [1, 2])
    engine = export_model(ckpt, format="tensorrt", precision=precision, out=tmp_path)["path"]
    assert Path(engine).suffix == ".engine"
    eager = instaseg.create_model(ckpt, device="cuda", threshold=0.1)
    fast = instaseg.create_model(engine, device="cuda", threshold=0.1)
    for i in range(4):
        picture = synth_image(i, 128, 0)[0]
        a, b = next(eager.predict(picture)), next(fast.predict(picture))
        agreement = compare_results(a, b, min_score=0.1)
        assert agreement.unmatched == 0
        assert agreement.max_box_gap <= 1.0 and agreement.min_mask_iou >= 0.98
    assert np.isfinite(fast.timing_summary()["model"]["mean_s"])
