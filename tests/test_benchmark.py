"""`instaseg benchmark` on every backend, on CPU, with a tiny recipe at 64 px."""

from __future__ import annotations

import json

import pytest
import torch

from instaseg.utils.device import torch_threads

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

BACKENDS = ["torch", "onnxruntime", "openvino"]


def test_benchmark_every_backend(cli) -> None:
    args = ["--model", "maskrcnn_fast", "--img-size", "64", "--iters", "2", "--warmup", "1", "--threads", "1"]
    with torch_threads(3):  # not the benchmark's 1, whatever this machine's cores
        code, out, err = cli("benchmark", *args, "--backend", *BACKENDS, "--batch-size", "2", "--json")
        # the calling process keeps its threads: later predictions in it round as before the benchmark
        assert torch.get_num_threads() == 3
    assert code == 0, err
    result = json.loads(out)
    assert all(r["threads"] == 1 for r in result["backends"].values())
    assert result["image_size"] == [64, 64] and result["batch_size"] == 2
    assert list(result["backends"]) == BACKENDS
    for r in result["backends"].values():
        for stage in ("preprocess", "model", "postprocess"):
            assert 0 < r["stages"][stage]["median_ms"] <= r["stages"][stage]["p90_ms"]
        assert r["end_to_end"]["median_ms"] >= r["stages"]["model"]["median_ms"]
        assert r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["model_mb"] > 0
        # a recipe name keeps every detection: post-processing does real work
        assert r["detections_per_image"] == 100
    gflops = [r["gflops"] for r in result["backends"].values()]
    assert min(gflops) > 0 and max(gflops) == pytest.approx(min(gflops), rel=0.05)  # one network, one count


def test_benchmark_table_and_errors(cli, tmp_path) -> None:
    code, out, _ = cli("benchmark", "--model", "maskrcnn_fast", "--img-size", "64", "--iters", "1", "--warmup", "0")
    assert code == 0 and "torch" in out and "GFLOPs" in out and "p90" in out
    code, _, err = cli("benchmark", "--model", "no_such_recipe")
    assert code == 2 and "no_such_recipe" in err
    (tmp_path / "m.onnx").write_bytes(b"x")
    code, _, err = cli("benchmark", "--model", str(tmp_path / "m.onnx"), "--backend", "openvino")
    assert code == 2 and "onnxruntime" in err
