"""Training engine: run files, resume state, loss going down, many instances, atomic checkpoints, the CLI.

Everything runs the real `maskrcnn_fast` recipe shrunk by overrides (64 px images, narrow heads) on a few
generated shapes images, so each run takes seconds on a CPU.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from instaseg.data.coco import CocoData, load_dataset
from instaseg.data.dataset import InstanceDataset, collate_fn
from instaseg.data.masks import mask_to_rle
from instaseg.data.pipeline import build_transforms
from instaseg.data.synthetic import CLASSES, generate_synthetic
from instaseg.engine import train as train_mod
from instaseg.engine.callbacks import AtomicCheckpointIO, EMACallback
from instaseg.engine.lr_schedules import WarmupPlateauLR
from instaseg.engine.module import InstanceSegModule
from instaseg.engine.train import resolve_recipe, train
from instaseg.models.factory import build_model, model_from_checkpoint
from instaseg.models.recipes import load_recipe
from instaseg.utils.device import torch_threads
from tiny import SMALL_MODEL, TINY


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 generated 64 px images: 6 train (3 steps of 2 per epoch), 2 val."""
    return generate_synthetic(tmp_path_factory.mktemp("shapes") / "data", num_images=8, img_size=64, seed=0)


class StateProbe(Callback):
    """Records what a (resumed) run starts from, and every training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.start: dict = {}

    def on_train_start(self, trainer: Trainer, pl_module: InstanceSegModule) -> None:
        opt = trainer.optimizers[0]
        first = opt.param_groups[0]["params"][0]
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, EMACallback)), None)
        lr = next(cb for cb in trainer.callbacks if isinstance(cb, WarmupPlateauLR))
        if ema is None:  # not a full training run
            return
        self.start = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "momentum": opt.state[first]["momentum_buffer"].clone() if first in opt.state else None,
            "ema_updates": ema.ema.updates,
            "ema_state": {k: v.clone() for k, v in ema.ema.state.items()},
            "lr_state": lr.state_dict(),
        }

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _with_probe(monkeypatch: pytest.MonkeyPatch) -> StateProbe:
    probe = StateProbe()
    make = train_mod.make_callbacks
    monkeypatch.setattr(train_mod, "make_callbacks", lambda recipe, out, *rest: [*make(recipe, out, *rest), probe])
    return probe


def _check_run_folder(out: Path, epochs: int) -> None:
    recipe = load_recipe(out / "config.yaml")
    assert recipe["input"] == {"min_size": 64, "max_size": 64, "resize": "keep_ratio"}
    assert recipe["train"]["epochs"] == epochs

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    for row in rows:
        assert math.isfinite(float(row["train_loss"])) and float(row["lr"]) > 0
        assert 0.0 <= float(row["val_mask_AP"]) <= 1.0 and 0.0 <= float(row["val_box_AP"]) <= 1.0
        # each class's mask AP has its column; their mean over the classes with objects is the mask AP
        per_class = [float(row[f"val_mask_AP[{name}]"]) for name in CLASSES]
        assert float(row["val_mask_AP"]) == pytest.approx(np.mean([v for v in per_class if v > -1]), abs=1e-6)

    result = json.loads((out / "train_result.json").read_text())
    assert result["done_flag"] is True and result["epochs_completed"] == epochs
    assert 0 <= result["best_epoch"] < epochs
    best_row = rows[result["best_epoch"]]
    assert result["best_metrics"]["mask_AP"] == pytest.approx(float(best_row["val_mask_AP"]))
    assert all(Path(p).is_file() for p in result["paths"].values())

    picture = cv2.imread(str(out / "curves.png"))
    assert picture is not None and picture.shape[0] > 100
    assert "epoch 0:" in (out / "train.log").read_text()
    assert not list(out.glob(".*.tmp")), "temporary checkpoint files left behind"

    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=True)
        part = ckpt["instaseg"]
        assert part["class_names"] == list(CLASSES)
        assert part["input"] == {"min_size": 64, "max_size": 64, "resize": "keep_ratio"}
        # EMA on: the saved "instaseg" weights are the average, not the raw training weights
        raw = ckpt["state_dict"]
        assert any(not torch.equal(v, raw[f"model.{k}"]) for k, v in part["model_state_dict"].items())
    model, info = model_from_checkpoint(out / "best.ckpt")
    assert info["class_names"] == list(CLASSES)
    with torch.no_grad():
        pred = model([torch.rand(3, 64, 64)])[0]
    assert set(pred) >= {"boxes", "labels", "scores", "masks"}


def test_resume_continues_from_saved_state(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    first = train("maskrcnn_fast", shapes, epochs=1, device="cpu", out=out, overrides=TINY)
    assert first["done_flag"] and first["epochs_completed"] == 1 and first["is_global_zero"]
    saved = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3

    probe = _with_probe(monkeypatch)
    second = train("maskrcnn_fast", shapes, epochs=2, device="cpu", out=out, resume=True, overrides=TINY)
    start = probe.start
    assert start["epoch"] == 1 and start["step"] == 3
    assert torch.equal(start["momentum"], saved["optimizer_states"][0]["state"][0]["momentum_buffer"])
    assert start["ema_updates"] == saved["callbacks"]["EMACallback"]["updates"] == 3
    for name, value in saved["instaseg"]["model_state_dict"].items():
        assert torch.equal(start["ema_state"][name], value), name
    assert start["lr_state"] == saved["callbacks"]["WarmupPlateauLR"]
    assert len(probe.losses) == 3  # only the second epoch ran

    assert second["epochs_completed"] == 2
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6
    assert last["callbacks"]["EMACallback"]["updates"] == 6
    _check_run_folder(out, epochs=2)


def test_training_lowers_the_loss_on_a_fixed_batch(shapes: Path) -> None:
    overrides = [*TINY, "train.hflip=false", "train.scale_jitter=null", "train.photometric=false"]
    recipe = resolve_recipe("maskrcnn_fast", overrides=overrides)
    data = load_dataset(shapes)["train"]
    dataset = InstanceDataset(data, build_transforms(recipe["input"], recipe["train"], train=True))
    batch = [dataset[0], dataset[1]]
    loader = DataLoader(batch * 24, batch_size=2, shuffle=False, collate_fn=collate_fn)
    torch.manual_seed(0)
    module = InstanceSegModule(build_model(recipe, len(CLASSES)), recipe, data.class_names, data.category_ids)
    probe = StateProbe()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=24,
        limit_val_batches=0,
        gradient_clip_val=10.0,
        callbacks=[WarmupPlateauLR(warmup_iters=5), probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    losses = probe.losses
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses


def test_cpu_ddp_threads_are_given_back_after_the_fit() -> None:
    """A CPU DDP rank shares out the cores for the fit; rank 0 is the caller's process and gets its count back."""
    recipe = resolve_recipe("maskrcnn_fast", overrides=TINY)
    module = InstanceSegModule(build_model(recipe, len(CLASSES)), recipe, list(CLASSES), [1, 2, 3])
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    module.trainer = SimpleNamespace(world_size=64, num_devices=64, strategy=cpu)
    with torch_threads(3):
        module.setup("fit")
        assert torch.get_num_threads() == 1  # cores // 64 processes, at least one
        module.teardown("fit")
        assert torch.get_num_threads() == 3


def test_one_training_step_with_300_instances(tmp_path: Path) -> None:
    size, side, gap = 128, 4, 6  # 20 x 15 squares of 4 px, 6 px apart
    image = np.full((size, size, 3), 40, np.uint8)
    annotations = []
    for i in range(300):
        y, x = 4 + (i // 20) * gap, 4 + (i % 20) * gap
        mask = np.zeros((size, size), np.uint8)
        mask[y : y + side, x : x + side] = 1
        image[mask > 0] = (200, 90 + i % 100, 60)
        annotations.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": mask_to_rle(mask),
                "area": 16.0,
                "bbox": [x, y, side, side],
                "iscrowd": 0,
            }  # fmt: skip
        )
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "many.png"), image)
    data = CocoData(
        [{"id": 1, "file_name": "many.png", "height": size, "width": size}],
        annotations,
        [{"id": 1, "name": "square"}],
        image_root=tmp_path / "images",
    )
    recipe = resolve_recipe("maskrcnn_fast", img_size=size, overrides=[*SMALL_MODEL, "train.scale_jitter=null"])
    dataset = InstanceDataset(data, build_transforms(recipe["input"], recipe["train"], train=True))
    img, target = dataset[0]
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (300, size, size)
    model = build_model(recipe, 1).train()
    losses = model([img], [target])
    loss = sum(losses.values())
    loss.backward()
    assert math.isfinite(float(loss))
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def killed_midway(obj, f, *args, **kwargs):
        half = b"PK\x03\x04 half a checkpoint"
        f.write(half) if hasattr(f, "write") else Path(f).write_bytes(half)  # a file object or a path
        raise KeyboardInterrupt  # the process dies while the new file is being written

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_cli_train(cli, shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_run"
    args = ["--model", "maskrcnn_fast", "--data", shapes, "--epochs", "1", "--img-size", "64", "--device", "cpu"]
    code, stdout, _ = cli("train", *args, "--out", out, *[x for o in SMALL_MODEL for x in ("-o", o)])
    assert code == 0 and "best mask AP" in stdout and str(out) in stdout
    assert (out / "best.ckpt").is_file() and (out / "train_result.json").is_file()

    # after training, best.ckpt was analysed on the val split: the same AP as validation gave it
    result = json.loads((out / "train_result.json").read_text())
    best = result["best_metrics"]
    analysed = json.loads((out / "evaluate_result.json").read_text())
    assert analysed["metrics"]["mask_AP"] == pytest.approx(best["mask_AP"], abs=1e-9)
    assert result["paths"]["analysis"] == analysed["analysis"]["report"] == str(out / "analysis" / "report.html")
    assert (out / "analysis" / "report.html").is_file() and (out / "analysis" / "errors.png").is_file()
    assert "analysing best.ckpt" in (out / "train.log").read_text()

    # validation scored the predictor's path: `instaseg eval` of best.ckpt gives the AP that chose it
    code, _, stderr = cli("eval", "--checkpoint", out / "best.ckpt", "--data", shapes, "--device", "cpu")
    assert code == 0, stderr
    scored = json.loads((out / "evaluate_result.json").read_text())["metrics"]
    assert scored["mask_AP"] == pytest.approx(best["mask_AP"], abs=1e-9)
    assert scored["box_AP"] == pytest.approx(best["box_AP"], abs=1e-9)

    code, _, stderr = cli("train", *args, "--out", out)  # a finished run is not overwritten
    assert code == 2 and "--resume" in stderr
    code, _, stderr = cli("train", *args, "--out", tmp_path / "empty", "--resume")
    assert code == 2 and "nothing to resume" in stderr


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path: Path) -> None:
    # 5 images: 4 train (one step of 2 per process), 1 val: the distributed sampler pads rank 1 with a repeat
    data = generate_synthetic(tmp_path / "data", num_images=5, img_size=64, seed=1)
    out = tmp_path / "ddp"
    announced: list[str] = []
    result = train("maskrcnn_fast", data, epochs=1, device="cpu", devices=2, out=out, overrides=TINY,
                   announce=announced.append)  # fmt: skip
    assert result["done_flag"] and result["is_global_zero"]
    # TINY: 2 images per device at lr 0.01 stated for 4 (maskrcnn_fast's base_batch): two devices train at 0.01
    line = "learning rate 0.01 for 4 images per optimizer step (2 device(s) x 1 node(s) x batch 2 x accumulate 1)"
    assert any(a.startswith(line) for a in announced) and line in (out / "train.log").read_text()
    assert result["best_metrics"]["images"] == 1  # the padded repeat was counted once
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 1
    assert "instaseg" in last


def test_seed_and_precision_come_from_the_recipe(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.seed seeds the run and train.precision is validated; on a CPU training runs in 32-bit."""
    from instaseg.errors import UserError

    seeds = []

    class Seeded(Exception):
        pass

    def seed_everything(seed, **kwargs):
        seeds.append(seed)
        raise Seeded

    monkeypatch.setattr(train_mod.pl, "seed_everything", seed_everything)
    with pytest.raises(Seeded):
        train("maskrcnn_fast", shapes, out=tmp_path / "run", overrides=[*TINY, "train.seed=7"])
    assert seeds == [7]
    recipe = resolve_recipe("maskrcnn_fast", overrides=[*TINY, "train.precision=bf16-mixed"])
    assert train_mod.build_trainer(recipe, tmp_path / "t", "cpu", 1, 1).precision == "32-true"
    with pytest.raises(UserError, match="train.precision"):
        resolve_recipe("maskrcnn_fast", overrides=["train.precision=fp8"])


def test_run_cut_mid_epoch_by_max_steps_ends_cleanly(shapes: Path, tmp_path: Path) -> None:
    """max_steps that ends training inside an epoch, before any validation, with early stopping on: no metric
    exists yet, and the run must still end with its last checkpoint rather than crash on the missing metric."""
    out = tmp_path / "cut"
    overrides = [*TINY, "train.max_steps=2", "train.early_stop_patience=3"]
    train("maskrcnn_fast", shapes, epochs=5, device="cpu", out=out, overrides=overrides)
    assert (out / "last.ckpt").is_file()
    model, info = model_from_checkpoint(out / "last.ckpt")
    assert info["class_names"] == list(CLASSES[: len(info["class_names"])])


def test_last_checkpoint_follows_every_epoch_with_or_without_validation(shapes: Path, tmp_path: Path) -> None:
    """last.ckpt is the state after the latest epoch even when the AP did not improve (Lightning's save_last alone
    skips those) and when no validation ran at all (a long val_interval)."""
    for name, extra in (("stalled", ["train.lr=1e-12"]), ("unvalidated", ["train.val_interval=100"])):
        out = tmp_path / name
        train("maskrcnn_fast", shapes, epochs=2, device="cpu", out=out, overrides=[*TINY, *extra])
        last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
        assert (last["epoch"], last["global_step"]) == (1, 6), name  # 3 steps per epoch
