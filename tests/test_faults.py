"""Faults a long run meets: NaN/Inf losses, a dead data worker, a full disk, a kill between an epoch's records
and its checkpoint, a folder of broken images, a conversion stopped midway.

Runs use `maskrcnn_fast` shrunk to 64 px (as tests/test_train.py does) on 8 generated images; the kill -9
tallies over many random moments are in bench/faults.py.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instaseg.data.dataset import InstanceDataset
from instaseg.data.synthetic import generate_synthetic
from instaseg.engine import train as train_mod
from instaseg.engine.faults import (
    NonFiniteGuard,
    ResumableOnFault,
    is_worker_death,
    read_resume_point,
    worker_death_stop,
)
from instaseg.errors import RunStopped
from instaseg.models.checkpoint import load_checkpoint, save_checkpoint
from tiny import TINY, TINY_ARGS


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 generated 64 px images: 6 train (3 steps of 2 per epoch), 2 val."""
    return generate_synthetic(tmp_path_factory.mktemp("shapes") / "data", num_images=8, img_size=64, seed=0)


def _train_argv(shapes: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    argv = ["train", "--model", "maskrcnn_fast", "--data", str(shapes), "--out", str(out), "--device", "cpu"]
    return [*argv, "--epochs", str(epochs), "--weights", "none", *TINY_ARGS, *extra]


def _poison(monkeypatch: pytest.MonkeyPatch, bad_ids: set[int] | None) -> None:
    """Make the detector's training losses NaN for batches holding one of ``bad_ids`` (None: every batch)."""
    build = train_mod.build_model

    def build_poisoned(*args, **kwargs):
        net = build(*args, **kwargs)
        forward = net.forward

        def poisoned(images, targets=None):
            out = forward(images, targets)
            ids = {int(t["image_id"]) for t in targets or []}
            if targets is not None and (bad_ids is None or ids & bad_ids):
                out = {k: v * float("nan") for k, v in out.items()}
            return out

        net.forward = poisoned
        return net

    monkeypatch.setattr(train_mod, "build_model", build_poisoned)


def _epoch_lines(log: Path) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"instaseg\.train: epoch (\d+): ", log.read_text())]


def _csv_epochs(path: Path) -> list[int]:
    lines = path.read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]


# ---- non-finite losses ----
def test_guard_skips_a_nonfinite_step_and_stops_after_a_streak(caplog: pytest.LogCaptureFixture) -> None:
    model = torch.nn.Linear(3, 1)
    guard = NonFiniteGuard(max_in_a_row=2)
    before = model.weight.detach().clone()
    model(torch.ones(1, 3)).sum().mul(float("inf")).backward()
    guard.see_batch([17, 42], {"loss_mask": torch.tensor(float("nan")), "loss_box": torch.tensor(0.5)})
    with caplog.at_level(logging.WARNING, logger="instaseg.train"):
        guard.check_gradients(model, step=7)
    assert model.weight.grad is None  # the optimizer now leaves the weights alone
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert torch.equal(model.weight, before)
    assert "step 7 skipped" in caplog.text and "loss_mask=nan" in caplog.text and "[17, 42]" in caplog.text

    model(torch.ones(1, 3)).sum().backward()  # a good step ends the streak
    guard.see_batch([1], {"loss": torch.tensor(0.3)})
    guard.check_gradients(model, step=8)
    assert model.weight.grad is not None and guard.in_a_row == 0 and guard.skipped == 1

    guard.see_batch([5], {"loss": torch.tensor(float("inf"))})
    guard.check_gradients(model, step=9)
    with pytest.raises(RunStopped, match=r"2 steps in a row.*step 10, images \[6\]"):
        guard.see_batch([6], {"loss": torch.tensor(float("nan"))})
        guard.check_gradients(model, step=10)


def test_a_bad_batch_is_skipped_and_named_and_the_run_finishes(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_thread
) -> None:
    _poison(monkeypatch, {1})
    out = tmp_path / "run"
    code, _, err = cli(*_train_argv(shapes, out, 1, "-o", "train.max_nonfinite_steps=3"))
    assert code == 0, err
    log = (out / "train.log").read_text()
    assert re.search(r"step \d+ skipped: non-finite loss_\w+=nan.* on images \[[\d, ]*\b1\b", log), log
    saved = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["nonfinite_steps"]["skipped"] == 1  # the counter travels in the checkpoint
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_repeated_nonfinite_steps_stop_resumably(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_thread
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _poison(patch, None)
        code, _, err = cli(*_train_argv(shapes, out, 2, "-o", "train.max_nonfinite_steps=2"))
    lines = [line for line in err.splitlines() if line.startswith(("stopped:", "error:", "Traceback"))]
    assert code == 3 and len(lines) == 1 and "2 steps in a row had a non-finite loss" in lines[0], err
    assert "images [" in lines[0] and "--resume" in lines[0]
    read_resume_point(out / "last.ckpt")  # saved at the stop: no epoch had finished
    load_checkpoint(out / "last.ckpt")
    code, _, err = cli(*_train_argv(shapes, out, 2), "--resume")  # the data is fine again: the run goes on
    assert code == 0, err
    assert _csv_epochs(out / "metrics.csv") == [0, 1] and _epoch_lines(out / "train.log") == [0, 1]


# ---- a data worker killed ----
def test_a_killed_data_worker_stops_the_run_resumably(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_thread
) -> None:
    getitem = InstanceDataset.__getitem__

    def dies_in_worker(self, index):
        if torch.utils.data.get_worker_info() is not None and self.train and index == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return getitem(self, index)

    monkeypatch.setattr(InstanceDataset, "__getitem__", dies_in_worker)
    out = tmp_path / "run"
    code, _, err = cli(*_train_argv(shapes, out, 1, "-o", "train.num_workers=1"))
    lines = [line for line in err.splitlines() if line.startswith(("stopped:", "error:", "Traceback"))]
    assert code == 3 and len(lines) == 1 and "data loading worker died" in lines[0], err
    read_resume_point(out / "last.ckpt")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signals")
def test_a_child_exit_during_the_stop_save_still_leaves_last_ckpt(tmp_path: Path) -> None:
    """Once a worker has died, torch's SIGCHLD handler raises its worker-death error again whenever any child process
    exits; one arriving in the middle of the stop's checkpoint save must not cost the checkpoint."""
    died = "DataLoader worker (pid(s) 12345) exited unexpectedly"

    def torch_like_handler(signum, frame):
        raise RuntimeError(died)

    class Trainer:
        def save_checkpoint(self, path: Path) -> None:
            os.kill(os.getpid(), signal.SIGCHLD)  # another child process exits mid-save
            Path(path).write_bytes(b"state")

    last = tmp_path / "last.ckpt"
    previous = signal.signal(signal.SIGCHLD, torch_like_handler)
    try:
        ResumableOnFault(last).on_exception(Trainer(), None, RuntimeError(died))
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert last.read_bytes() == b"state"


def test_a_worker_killed_during_a_batch_handoff_counts_as_a_worker_death() -> None:
    """Killed while passing a batch's shared memory over, a worker leaves the main process a ConnectionResetError
    inside the DataLoader rather than torch's RuntimeError; the same error elsewhere is not a worker death."""
    namespace: dict = {}
    raising = "def get():\n    raise ConnectionResetError(104, 'Connection reset by peer')\n"
    exec(compile(raising, "/site-packages/torch/utils/data/dataloader.py", "exec"), namespace)
    with pytest.raises(ConnectionResetError) as inside:
        namespace["get"]()
    assert is_worker_death(inside.value)
    assert "Connection reset by peer" in str(worker_death_stop(inside.value))
    with pytest.raises(ConnectionResetError) as elsewhere:
        raise ConnectionResetError(104, "Connection reset by peer")
    assert not is_worker_death(elsewhere.value)


# ---- a kill between an epoch's records and its checkpoint ----
def test_resume_drops_records_the_checkpoint_does_not_have(shapes: Path, tmp_path: Path, cli, one_thread) -> None:
    out = tmp_path / "run"
    assert cli(*_train_argv(shapes, out, 1))[0] == 0
    # the state a kill -9 leaves after epoch 1's records were written, before its last.ckpt replaced epoch 0's
    log = out / "train.log"
    log.write_text(log.read_text() + "2026-01-01 00:00:00,000 INFO instaseg.train: epoch 1: step=6, lr=0.01\n")
    metrics = out / "metrics.csv"
    metrics.write_text(metrics.read_text() + metrics.read_text().splitlines()[1].replace("0,", "1,", 1) + "\n")
    code, _, err = cli(*_train_argv(shapes, out, 2), "--resume")
    assert code == 0, err
    assert _epoch_lines(log) == [0, 1] and _csv_epochs(metrics) == [0, 1]
    assert "dropped 1 epoch line(s)" in log.read_text()
    for name in ("best.ckpt", "last.ckpt"):
        load_checkpoint(out / name)


# ---- a full disk ----
def _disk_full_after(monkeypatch: pytest.MonkeyPatch, target, name: str, allowed: int) -> None:
    """``target.name`` writes ``allowed`` times, then fails as a full disk does."""
    real = getattr(target, name)
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > allowed:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, write)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_thread
) -> None:
    out = tmp_path / "run"
    _disk_full_after(monkeypatch, torch, "save", allowed=2)  # epoch 0 writes best.ckpt and last.ckpt
    code, _, err = cli(*_train_argv(shapes, out, 2))
    lines = [line for line in err.splitlines() if line.startswith(("error:", "Traceback"))]
    assert code == 2 and len(lines) == 1, err
    assert re.search(r"error: \S+/(best|last)\.ckpt: no space left", lines[0]), lines[0]
    monkeypatch.undo()
    assert read_resume_point(out / "last.ckpt").rows[-1]["epoch"] == 0  # epoch 0's checkpoint, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_writing_predictions_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, tiny_maskrcnn, one_thread
) -> None:
    recipe, model = tiny_maskrcnn(2, TINY)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, recipe, ["a", "b"], [1, 2])
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(images / "x.png")
    _disk_full_after(monkeypatch, Path, "write_text", allowed=0)
    code, _, err = cli("predict", "--checkpoint", ckpt, "--input", images, "--out", tmp_path / "p", "--save-json")
    assert code == 2 and re.search(r"error: \S+/p/x\.json: no space left", err.strip().splitlines()[-1]), err
    assert not (tmp_path / "p" / "x.json").exists()
    pytest.importorskip("onnx")
    _disk_full_after(monkeypatch, Path, "write_bytes", allowed=0)
    code, _, err = cli("export", "--checkpoint", ckpt, "--out", tmp_path / "e", "--img-size", "64")
    assert code == 2 and re.search(r"error: \S+/e/model\.onnx: no space left", err.strip().splitlines()[-1]), err
    assert not list((tmp_path / "e").glob("*"))


def test_full_disk_while_converting_leaves_no_dataset(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    _disk_full_after(monkeypatch, shutil, "copy2", allowed=3)
    out = tmp_path / "converted"
    code, _, err = cli("data", "convert", shapes, "--from", "coco", "--out", out)
    assert code == 2 and "no space left" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())  # nothing that could pass for a finished dataset
    assert not list(tmp_path.glob(".converted.partial*"))
    monkeypatch.undo()
    code, _, err = cli("data", "convert", shapes, "--from", "coco", "--out", out)  # space again: it goes through
    assert code == 0 and (out / "annotations" / "instances_val.json").is_file(), err


def test_a_conversion_killed_midway_is_redone_cleanly(shapes: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "converted"
    stale = tmp_path / ".converted.partial"  # what kill -9 leaves: a hidden, unfinished copy, and no `out`
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "half.jpg").write_bytes(b"\xff\xd8 half")
    code, _, err = cli("data", "convert", shapes, "--from", "coco", "--out", out)
    assert code == 0, err
    assert not stale.exists() and not (out / "images" / "half.jpg").exists()


# ---- prediction over a folder of broken files ----
def test_predict_skips_broken_files_and_counts_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, tiny_maskrcnn, one_thread
) -> None:
    recipe, model = tiny_maskrcnn(2, TINY)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model, recipe, ["a", "b"], [1, 2])
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(np.zeros((600, 600, 3), np.uint8)).save(folder / "huge.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:200])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "readme.txt").write_text("not an image either, and not listed")
    video = tmp_path / "clip.mp4"  # videos are given by name (a folder lists its images)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 corrupt video")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # huge.png (360,000 px) now counts as a pixel bomb
    code, out, err = cli(
        "predict", "--checkpoint", ckpt, "--input", folder, video, "--out", tmp_path / "p", "--save-json"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "p").glob("*.json")) == ["cmyk.json", "deep16.json", "good.json"]
    assert "3 images" in out and "5 skipped" in out
    tally = out.strip().splitlines()[-1]
    assert tally.startswith("skipped 3 corrupt or unreadable image"), err
    assert "1 image too large to decode" in tally and "1 cannot open video" in tally
