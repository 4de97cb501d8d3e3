"""`instaseg predict --engine ray`: a local Ray instance (2 CPUs) over a few hundred small images gives exactly the
single-process predictor's results, sharded, resumable, in JSON lines or Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from instaseg.data.synthetic import synth_image  # noqa: E402
from instaseg.errors import UserError  # noqa: E402
from instaseg.inference.predictor import create_model  # noqa: E402
from instaseg.inference.ray_engine import predict_ray, result_record  # noqa: E402
from instaseg.utils.device import torch_threads  # noqa: E402

IMAGES = 240
SHARD = 60


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, tiny_maskrcnn) -> dict:
    """A small model whose detections follow the picture, and a folder of 240 small images plus a corrupt one."""
    import cv2

    from instaseg.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("ray")
    recipe, model = tiny_maskrcnn(2, ["input.min_size=48", "input.max_size=48", "eval.score_threshold=0.05"])
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(40.0)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(3.0)
    ckpt = save_checkpoint(root / "model.pt", model, recipe, ["a", "b"], [4, 9])
    images = root / "images"
    images.mkdir()
    for i in range(IMAGES):
        cv2.imwrite(str(images / f"img_{i:04d}.png"), synth_image(i, 48, 0)[0][..., ::-1])
    (images / "img_0100_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return {"ckpt": ckpt, "images": images, "root": root}


def _jsonl(folder: Path) -> dict[str, dict]:
    records = {}
    for shard in sorted(folder.glob("shard-*.jsonl")):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            records[record["input_path"]] = record
    return records


def _single_process(job: dict) -> dict[str, dict]:
    with torch_threads(1):  # as each of the 2 actors runs on 2 CPUs
        predictor = create_model(job["ckpt"])
        paths = sorted(str(p) for p in job["images"].glob("img_????.png"))
        results = zip(paths, predictor.predict(paths), strict=True)
        return {p: json.loads(json.dumps(result_record(r, p))) for p, r in results}


def test_ray_results_match_the_single_process_predictor_and_resume(job: dict, local_ray, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = predict_ray(job["ckpt"], [str(job["images"])], out, concurrency=2, shard_size=SHARD)
    assert summary["images"] == IMAGES and summary["skipped"] == 1
    assert summary["shards"] == summary["shards_run"] == 5  # 241 files in shards of 60
    records = _jsonl(out)
    broken = records.pop(str(job["images"] / "img_0100_broken.png"))
    assert "corrupt or unreadable image" in broken["error"]
    expected = _single_process(job)
    assert sum(len(r["boxes"]) for r in expected.values()) > IMAGES  # detections to compare, not empty lists
    one = next(r for r in records.values() if r["boxes"])
    assert sorted(one) == ["boxes", "height", "input_path", "masks", "width"]  # Result.json's schema
    assert sorted(one["boxes"][0]) == ["cls_id", "coordinate", "label", "score"]
    assert records == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["total_images"] == IMAGES + 1

    # a job killed midway: the shard that was not written runs again, the others are kept
    (out / "shard-00002.jsonl").unlink()
    before = (out / "shard-00000.jsonl").stat().st_mtime_ns
    again = predict_ray(job["ckpt"], [str(job["images"])], out, concurrency=2, shard_size=SHARD)
    assert again["shards_run"] == 1 and (out / "shard-00000.jsonl").stat().st_mtime_ns == before
    assert _jsonl(out) == {**records, str(job["images"] / "img_0100_broken.png"): broken}

    with pytest.raises(UserError, match="another job"):
        predict_ray(job["ckpt"], [str(job["images"])], out, shard_size=SHARD + 1)


def test_tiling_reaches_the_actors(job: dict, local_ray, tmp_path: Path) -> None:
    """``tile`` is the actors' as the single-process predictor's: tiled results, not the whole-image ones."""
    chosen = sorted(str(p) for p in job["images"].glob("img_000?.png"))  # 10 images of 48 px
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join(chosen) + "\n")
    predict_ray(job["ckpt"], [str(listing)], tmp_path / "tiled", shard_size=5, concurrency=1, tile=32)
    records = _jsonl(tmp_path / "tiled")
    with torch_threads(2):  # as the one actor
        tiled, whole = create_model(job["ckpt"], tile=32), create_model(job["ckpt"], tile="off")
        expected = {p: result_record(r, p) for p, r in zip(chosen, tiled.predict(chosen), strict=True)}
        untiled = {p: result_record(r, p) for p, r in zip(chosen, whole.predict(chosen), strict=True)}
    expected, untiled = json.loads(json.dumps(expected)), json.loads(json.dumps(untiled))  # as the shards hold them
    assert [records[p]["masks"] for p in chosen] == [expected[p]["masks"] for p in chosen]
    assert [expected[p]["masks"] for p in chosen] != [untiled[p]["masks"] for p in chosen]
    manifest = json.loads((tmp_path / "tiled" / "manifest.json").read_text())
    assert manifest["settings"]["tile"] == 32


@pytest.mark.slow
def test_parquet_and_list_file_inputs(job: dict, local_ray, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    chosen = sorted(str(p) for p in job["images"].glob("img_00[0-4]?.png"))  # 50 images
    listing = tmp_path / "inputs.txt"
    listing.write_text("# images to predict\n" + "\n".join(chosen) + "\n")
    out = tmp_path / "parquet"
    summary = predict_ray(job["ckpt"], [str(listing)], out, fmt="parquet", shard_size=20, concurrency=1)
    assert summary["images"] == 50 and summary["shards"] == 3
    rows = [row for shard in sorted(out.glob("shard-*.parquet")) for row in pq.read_table(shard).to_pylist()]
    assert [r["input_path"] for r in rows] == chosen
    expected = _single_process(job)
    for row in rows:  # the json records' schema, nested alike
        want = expected[row["input_path"]]
        assert row["masks"] == want["masks"] and row["error"] is None
        assert [(b["cls_id"], b["label"]) for b in row["boxes"]] == [(b["cls_id"], b["label"]) for b in want["boxes"]]
        # one actor ran on both CPUs here, the reference on one: sums in another order, equal to float32 rounding
        # (and the coordinates' rounding to 0.01)
        got, ref = ([b["coordinate"] for b in r["boxes"]] for r in (row, want))
        assert np.allclose(np.array(got).reshape(-1, 4), np.array(ref).reshape(-1, 4), atol=0.011)


def test_cli_refuses_options_that_need_the_local_engine(job: dict, cli, tmp_path: Path) -> None:
    code, _, err = cli("predict", "--checkpoint", job["ckpt"], "--input", job["images"], "--engine", "ray",
                       "--save-img", "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and "--save-img" in err and not (tmp_path / "o").exists()
