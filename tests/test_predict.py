"""Predictor end to end on a tiny random-init model: every input kind, batching, laziness, parity with eager."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import instaseg
from instaseg.errors import UserError
from instaseg.inference import sources
from instaseg.inference.preprocess import preprocess
from tiny import CKPT_CATEGORY_IDS as CATEGORY_IDS
from tiny import CKPT_CLASSES as CLASSES


@pytest.fixture(scope="module")
def predictor(tiny_ckpt: Path):
    return instaseg.create_model(tiny_ckpt, threshold=0.3)


def _image(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (250, 40, 40), -1)
    return img


def _write(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(img).save(path)  # png: lossless, so file and array inputs see the same pixels
    return path


def _same(a, b) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.rles == b.rles


def test_preprocess_equals_model_transform(predictor):
    model = predictor.backend.model
    images = [_image(0), _image(1, 90, 50)]
    batch, sizes = preprocess(images, predictor.backend.spec)
    ref = model.transform([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images])[0]
    assert sizes == [tuple(s) for s in ref.image_sizes]
    assert torch.equal(batch, ref.tensors)


def test_preprocess_table_gives_every_value_as_the_transform_does(predictor):
    """Every uint8 value of every channel, one picture that fills its frame (the batch is the picture itself),
    normalised bit for bit as the model's own transform; and a static graph of that frame gets the same feed as a
    canvas would give it."""
    from instaseg.inference.backends.exported import graph_inputs

    spec = predictor.backend.spec
    side = spec.min_size
    image = np.random.default_rng(3).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image[:16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    batch, sizes = preprocess([image], spec)
    assert spec.padded_frame(*sizes[0]) == sizes[0] == (side, side)
    ref = predictor.backend.model.transform([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert torch.equal(batch, ref.tensors)
    frame = spec.padded_frame(*sizes[0])
    static = {"dynamic": False, "height": frame[0], "width": frame[1]}
    canvas = spec.canvas(1, *frame)
    canvas[..., : sizes[0][0], : sizes[0][1]] = batch[0, :, : sizes[0][0], : sizes[0][1]]
    feed = next(graph_inputs(batch, sizes, static, spec))
    np.testing.assert_array_equal(feed["images"], canvas.numpy())


@pytest.mark.parametrize("size", [(96, 64), (95, 64), (64, 96), (70, 40)])
def test_resize_pass_is_skipped_only_when_it_keeps_the_size(size):
    """A picture already at the model's size skips the interpolation, with the very values it would have given."""
    from instaseg.inference.preprocess import resize_normalized
    from instaseg.models.detector import InputSpec, resize_transform

    spec = InputSpec(min_size=64, max_size=96)
    image = torch.rand(3, *size)
    out = resize_normalized(image, spec)
    ref = resize_transform(64, 96).resize(image, None)[0]  # torchvision's own resize step
    assert torch.equal(out, ref)
    assert (out is image) == (tuple(out.shape[-2:]) == size)

def test_detections_equal_eager_model(predictor):
    """Same boxes, scores, labels as torchvision's full forward (which pastes masks itself)."""
    image = _image(2)
    result = next(predictor.predict(image, threshold=0.0))
    with torch.no_grad():
        ref = predictor.backend.model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert len(result) == len(ref["scores"]) > 0
    np.testing.assert_allclose(result.boxes, ref["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(result.scores, ref["scores"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.labels, ref["labels"].numpy())
    masks = result.masks
    assert masks.shape == (len(result), *image.shape[:2]) and masks.any(axis=(1, 2)).all()
    # the pasted masks are torchvision's own, up to interpolation rounding where a probability sits at 0.5
    expected = ref["masks"][:, 0].numpy() > 0.5
    assert (masks != expected).mean() < 0.01


def test_every_input_kind_gives_the_same_result(predictor, tmp_path):
    img = _image(3)
    path = _write(tmp_path / "a.png", img)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "b.png", _image(4))
    from_array = list(predictor.predict(img))
    from_bgr = list(predictor.predict(np.ascontiguousarray(img[..., ::-1]), bgr=True))
    from_pil = list(predictor.predict(Image.open(path)))
    from_path = list(predictor.predict(str(path)))
    from_folder = list(predictor.predict(tmp_path))
    from_glob = list(predictor.predict(str(tmp_path / "**" / "*.png")))
    from_list = list(predictor.predict([path, img, tmp_path / "sub"]))
    for results in (from_bgr, from_pil, from_path):
        _same(results[0], from_array[0])
    assert [r.name for r in from_folder] == ["a", "sub/b"]
    assert [Path(r.input_path).name for r in from_glob] == ["a.png", "b.png"]
    assert [r.name for r in from_list] == ["a", "array", "b"]
    for results in (from_folder, from_glob, from_list):
        _same(results[0], from_array[0])
    _same(from_list[2], from_folder[1])
    assert from_path[0].input_path == str(path) and from_array[0].input_path is None
    # an unflipped BGR array is a different picture: the flag matters
    assert not np.allclose(list(predictor.predict(img[..., ::-1].copy()))[0].scores, from_array[0].scores)


def _write_video(path: Path, frames: list[np.ndarray], codec: str) -> bool:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 5, (w, h))
    if not writer.isOpened():
        return False
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    return path.is_file() and path.stat().st_size > 0


@pytest.mark.parametrize("suffix, codec", [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_video_gives_one_result_per_frame(predictor, tmp_path, suffix, codec):
    frames = [_image(10 + i, 64, 80) for i in range(3)]
    video = tmp_path / f"clip{suffix}"
    if not _write_video(video, frames, codec):
        pytest.skip(f"this OpenCV build cannot write {codec} video")
    results = list(predictor.predict(video, batch_size=2))
    assert [r.frame_index for r in results] == [0, 1, 2]
    assert [r.name for r in results] == ["clip_000000", "clip_000001", "clip_000002"]
    assert all(r.input_path == str(video) and r.image_size == (64, 80) for r in results)
    assert results[0].json["frame_index"] == 0
    assert sources.count_inputs(video) == 3
    assert results[1].img.shape == (64, 80, 3)  # frames are kept with their result for the overlay


def test_predict_is_lazy(predictor, tmp_path, monkeypatch):
    for i in range(3):
        _write(tmp_path / f"{i}.png", _image(20 + i))
    reads = []
    real = sources.read_image
    monkeypatch.setattr(sources, "read_image", lambda p: reads.append(Path(p).name) or real(p))
    stream = predictor.predict(tmp_path)
    assert reads == []  # a generator: nothing read before it is asked for
    first = next(stream)
    assert first.name == "0" and reads == ["0.png"]
    assert [r.name for r in stream] == ["1", "2"]


def test_batching_threshold_and_timings(predictor):
    images = [_image(30 + i) for i in range(3)]
    predictor.reset_timings()
    one = list(predictor.predict(images, batch_size=1))
    assert {k: len(v) for k, v in predictor.timings.items()} == {
        "read": 3,
        "preprocess": 3,
        "model": 3,
        "postprocess": 3,
    }
    predictor.reset_timings()
    two = list(predictor.predict(images, batch_size=2))
    assert len(predictor.timings["model"]) == 2
    for a, b in zip(one, two, strict=True):
        _same(a, b)
    shares = predictor.timing_summary()
    assert set(shares) == {"read", "preprocess", "model", "postprocess"}
    assert abs(sum(v["share"] for v in shares.values()) - 1.0) < 1e-6
    cut = float(np.median(one[0].scores))
    strict = list(predictor.predict(images[:1], threshold=cut))[0]
    assert 0 < len(strict) < len(one[0]) and (strict.scores >= cut).all() and (one[0].scores >= 0.3).all()


def test_corrupt_image_raises_or_is_skipped(predictor, tmp_path):
    _write(tmp_path / "a.png", _image(40))
    (tmp_path / "b.png").write_bytes(b"not an image")
    _write(tmp_path / "c.png", _image(41))
    with pytest.raises(UserError, match="b.png"):
        list(predictor.predict(tmp_path, on_error="raise"))
    errors = []
    names = [r.name for r in predictor.predict(tmp_path, on_error=errors.append)]
    assert names == ["a", "c"] and len(errors) == 1 and "b.png" in str(errors[0])
    assert [p for p, _ in predictor.skipped] == [str(tmp_path / "b.png")]


def test_corrupt_image_skipped_with_a_warning_by_default(predictor, tmp_path, caplog):
    """A good and a corrupt image: the default goes on with a warning naming the file; the caller can count."""
    good = _write(tmp_path / "good.png", _image(42))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with caplog.at_level("WARNING", logger="instaseg.inference.predictor"):
        results = list(predictor.predict(tmp_path))
    assert [r.input_path for r in results] == [str(good)]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "bad.jpg" in warnings[0].getMessage()
    assert len(predictor.skipped) == 1
    path, reason = predictor.skipped[0]
    assert path == str(tmp_path / "bad.jpg") and reason and reason in warnings[0].getMessage()
    with pytest.raises(UserError, match="bad.jpg"):
        list(predictor.predict([good, tmp_path / "bad.jpg"], on_error="raise"))
    seen = []
    assert len(list(predictor.predict(tmp_path, on_error=seen.append))) == 1
    assert len(seen) == 1 and isinstance(seen[0], UserError) and "bad.jpg" in str(seen[0])
    assert list(predictor.predict(good)) and predictor.skipped == []  # reset by each call
    with pytest.raises(ValueError, match="on_error"):
        list(predictor.predict(good, on_error="ignore"))


def test_user_errors(predictor, tiny_ckpt, tmp_path):
    with pytest.raises(UserError, match="not found"):
        list(predictor.predict(tmp_path / "missing.jpg"))
    with pytest.raises(UserError, match="match"):
        list(predictor.predict(str(tmp_path / "*.jpg")))
    with pytest.raises(UserError, match="uint8"):
        list(predictor.predict(np.zeros((8, 8, 3), np.float32)))
    with pytest.raises(UserError, match="not found"):
        instaseg.create_model(tmp_path / "nope.pt")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown model format"):
        instaseg.create_model(tmp_path / "m.bin")


def test_cli_skips_corrupt_image_and_writes_outputs(cli, tiny_ckpt, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _write(images / "000000000001.png", _image(50))
    (images / "000000000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _write(images / "000000000003.png", _image(51))
    out, coco_file = tmp_path / "out", tmp_path / "coco.json"
    code, _, err = cli(
        "predict", "--checkpoint", tiny_ckpt, "--input", images, "--out", out, "--threshold", "0.3",
        "--device", "cpu", "--coco-results", coco_file,
    )  # fmt: skip
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "000000000002.jpg" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "000000000001.json", "000000000001.png", "000000000003.json", "000000000003.png",
    ]  # fmt: skip
    saved = json.loads((out / "000000000001.json").read_text())
    assert saved["boxes"] and saved["boxes"][0]["label"] in CLASSES and len(saved["masks"]) == len(saved["boxes"])
    entries = json.loads(coco_file.read_text())
    assert {e["image_id"] for e in entries} == {1, 3}
    assert {e["category_id"] for e in entries} <= set(CATEGORY_IDS)


def test_cli_has_no_bgr_flag(cli, tiny_ckpt, tmp_path):
    """Files are read as RGB, so the CLI has no --bgr (it was accepted and ignored); arrays keep ``bgr=True``,
    whose channel swap test_every_input_kind_gives_the_same_result checks."""
    img = _write(tmp_path / "x.png", _image(61))
    code, _, err = cli("predict", "--checkpoint", tiny_ckpt, "--input", img, "--out", tmp_path / "o", "--bgr")
    assert code == 2 and "--bgr" in err and not (tmp_path / "o").exists()


def test_cli_save_json_only_and_missing_input(cli, tiny_ckpt, tmp_path):
    img = _write(tmp_path / "x.png", _image(60))
    code, _, _ = cli("predict", "--checkpoint", tiny_ckpt, "--input", img, "--out", tmp_path / "o", "--save-json")
    assert code == 0 and [p.name for p in (tmp_path / "o").iterdir()] == ["x.json"]
    code, _, err = cli("predict", "--checkpoint", tiny_ckpt, "--input", tmp_path / "none.png", "--out", tmp_path / "p")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "none.png" in err
    code, _, err = cli("predict", "--checkpoint", tiny_ckpt, "--input", tmp_path, "--out", tmp_path / "inside")
    assert code == 2 and "inside" in err and not (tmp_path / "inside").exists()
