"""`train()`: a recipe on a COCO dataset folder, with Lightning doing the loop, devices, AMP and DDP.

The run folder holds config.yaml (the resolved recipe), train.log, metrics.csv, curves.png, train_result.json,
best.ckpt and last.ckpt. ``resume=True`` continues from OUT/last.ckpt with the optimizer, learning-rate,
EMA, early-stopping, timer and epoch state.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from torch.utils.data import DataLoader

from instaseg.config import multiscale_overrides, recipe_to_yaml
from instaseg.data.coco import CocoData, load_dataset
from instaseg.data.dataset import InstanceDataset, collate_fn
from instaseg.data.pipeline import build_transforms, train_collate
from instaseg.data.statistics import DatasetStatistics
from instaseg.data.tiles import TiledInstanceDataset
from instaseg.engine.auto_config import auto_configure, render_choices
from instaseg.engine.callbacks import VAL_METRIC, AtomicCheckpointIO, EMACallback
from instaseg.engine.faults import (
    ResumableOnFault,
    check_resume_fits,
    is_worker_death,
    read_resume_point,
    reconcile_run_records,
    worker_death_stop,
)
from instaseg.engine.module import InstanceSegModule
from instaseg.engine.outputs import FILES, RunRecorder, attach_log, detach_log, run_paths
from instaseg.engine.scaling import BatchScaling, batch_scaling
from instaseg.engine.schedules import make_schedule_callbacks
from instaseg.errors import UserError
from instaseg.models.factory import build_model
from instaseg.models.recipes import apply_overrides, load_recipe
from instaseg.utils.device import resolve_device
from instaseg.utils.io import atomic_write_json, atomic_write_text, read_json

logger = logging.getLogger("instaseg.train")

# a default run folder is named once, in the launching process; DDP workers started by Lightning inherit it
_OUT_ENV = "INSTASEG_RUN_OUT"

# the run folder holds config.yaml and train.log before the first checkpoint: expected, not worth a warning
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def train(
    model: str,
    data: str | Path,
    epochs: int | None = None,
    batch_size: int | None = None,
    img_size: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    weights: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    auto: bool | None = None,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train recipe ``model`` (a name or a yaml) on the COCO dataset folder ``data``; returns the train result.

    Command-line values override the recipe (``img_size`` sets input.min_size and input.max_size), then the
    dotted ``overrides`` ("train.epochs=3"). ``auto`` (default: the recipe's ``auto.enabled``, true) fits input
    size, tiling, anchors and detections per image to the training split (`instaseg.engine.auto_config`); values
    given here or in ``overrides`` keep theirs, and ``auto=False`` keeps the recipe as written.
    The result (also OUT/train_result.json) holds ``done_flag``,
    ``best_epoch``, ``best_metrics`` (mask_AP, box_AP, ...), ``out`` and ``paths``, plus ``is_global_zero``
    (False in the extra processes of a multi-process run, which should stay quiet). ``announce`` is called (in
    the launching process only) with each line worth showing before training starts: the learning rate and warmup
    the linear scaling rule chose for the actual total batch, and the published numbers they were scaled from.
    """
    recipe, out_dir = _prepare_run(model, out, resume, epochs, batch_size, img_size, lr, overrides)
    point = read_resume_point(out_dir / FILES["last"]) if resume else None
    note = reconcile_run_records(out_dir, point, FILES["metrics"], FILES["log"]) if _launching_rank_zero() else None
    # on a cluster every rank runs this; one writer keeps train.log free of each line repeated per process
    handler = attach_log(out_dir / FILES["log"]) if _launching_rank_zero() else None
    try:
        if note:
            logger.info(note)
        splits = _load_splits(data)
        train_data, val_data = splits["train"], splits["val"]
        if not resume:  # a resumed run keeps the choices its config.yaml recorded
            explicit = _explicit_keys(img_size, overrides)
            recipe = _trainable_norm_from_scratch(recipe, weights, explicit, announce)
            recipe = _configure_for_data(recipe, train_data, auto, explicit, weights, out_dir)
        logger.info(
            "recipe %s on %s: %d train / %d val images",
            recipe["name"],
            data,
            len(train_data.images),
            len(val_data.images),
        )
        pl.seed_everything(int(recipe["train"]["seed"]), workers=True, verbose=False)
        # a resumed run takes its weights from last.ckpt: build without fetching any pretrained ones
        net = build_model(recipe, num_classes=len(train_data.class_names), weights="none" if resume else weights)
        module = InstanceSegModule(net, recipe, train_data.class_names, train_data.category_ids, val_gt=val_data)
        if point is not None:
            check_resume_fits(point, module, train_data.class_names)
        scaling = batch_scaling(recipe["train"], devices, num_nodes, recipe["published"]["config"])
        logger.info(scaling.describe())
        if announce is not None and _launching_rank_zero():
            announce(scaling.describe())
        trainer = build_trainer(recipe, out_dir, device, devices, num_nodes)
        module.strict_finite = trainer.precision == "32-true"
        loaders = make_loaders(recipe, train_data, val_data)
        ckpt = str(out_dir / FILES["last"]) if resume else None
        start = time.monotonic()
        try:
            trainer.fit(module, *loaders, ckpt_path=ckpt)
        except RuntimeError as e:
            if is_worker_death(e):
                raise worker_death_stop(e) from None
            raise
        logger.info("training stopped after %.0f s", time.monotonic() - start)
        result = _result(trainer, out_dir)
        if result["is_global_zero"] and result.get("done_flag") and recipe["eval"]["analyze"]:
            _analyze_best(result, data, recipe, device)
        return result
    finally:
        detach_log(handler)


def _analyze_best(result: dict[str, Any], data: str | Path, recipe: dict, device: str) -> None:
    """`instaseg eval --analyze` of best.ckpt on the val split, into the run folder (evaluate_result.json and
    analysis/); its report joins the result's paths. A failure is logged: the trained model stands regardless."""
    from instaseg.engine.evaluate import evaluate

    out = Path(result["out"])
    best = out / FILES["best"]
    if not best.is_file():
        return
    logger.info("analysing best.ckpt on the val split -> %s", out / "analysis")
    try:
        batch = int(recipe["train"]["batch_size"])
        evaluated = evaluate(best, data, "val", int(recipe["eval"]["max_dets"]), batch, device, out, analyze=True)
    except (UserError, OSError) as e:
        logger.warning("could not analyse best.ckpt: %s", e)
        return
    result["paths"]["analysis"] = evaluated["analysis"]["report"]
    atomic_write_json(out / FILES["result"], {k: v for k, v in result.items() if k != "is_global_zero"})


def resolve_recipe(
    model: str | dict,
    epochs: int | None = None,
    batch_size: int | None = None,
    img_size: int | None = None,
    lr: float | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """The recipe with command-line values applied, then the dotted overrides (which win). ``img_size`` moves the
    multi-scale training sizes along with the input."""
    recipe = load_recipe(model) if not isinstance(model, dict) else model
    cli = []
    for key, value in (("train.epochs", epochs), ("train.batch_size", batch_size), ("train.lr", lr)):
        if value is not None:
            cli.append(f"{key}={value}")
    if img_size is not None:
        cli += [f"input.min_size={img_size}", f"input.max_size={img_size}", *multiscale_overrides(recipe, img_size)]
    return apply_overrides(recipe, cli + list(overrides or []))


def _prepare_run(model, out, resume, epochs, batch_size, img_size, lr, overrides) -> tuple[dict, Path]:
    if resume:
        if out is None:
            raise UserError("--resume needs --out, the run folder to continue")
        out_dir = Path(out)
        last = out_dir / FILES["last"]
        if not last.is_file():
            raise UserError("nothing to resume: no last.ckpt in the run folder", out_dir)
        # the run's own resolved recipe is the base; values given now (e.g. more epochs) still apply
        base = out_dir / FILES["config"]
        recipe = resolve_recipe(str(base) if base.is_file() else model, epochs, batch_size, img_size, lr, overrides)
    else:
        recipe = resolve_recipe(model, epochs, batch_size, img_size, lr, overrides)
        out_dir = Path(out) if out is not None else _default_out(recipe["name"])
        if (out_dir / FILES["last"]).exists() and os.environ.get("LOCAL_RANK") is None:
            raise UserError("the run folder already holds a run: pass --resume, or choose another --out", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if _launching_rank_zero():
        atomic_write_text(out_dir / FILES["config"], recipe_to_yaml(recipe))
    return recipe, out_dir


def _explicit_keys(img_size: int | None, overrides: list[str] | None) -> set[str]:
    """Dotted recipe keys the caller set: dataset-aware choices leave them alone."""
    keys = {item.split("=", 1)[0].strip() for item in overrides or []}
    return keys | ({"input.min_size", "input.max_size"} if img_size is not None else set())


def _trainable_norm_from_scratch(
    recipe: dict, weights: str | None, explicit: set[str], announce: Callable[[str], None] | None
) -> dict:
    """``model.norm: bn`` for a run with no pretrained weights: a frozen BatchNorm on random weights has the
    identity's statistics and normalises nothing (the published recipes freeze it on ImageNet weights)."""
    start = str(weights if weights is not None else recipe["model"].get("weights", "none")).lower()
    if start != "none" or recipe["model"].get("norm") != "frozen_bn" or "model.norm" in explicit:
        return recipe
    line = "training from scratch: model.norm bn (trainable BatchNorm; -o model.norm=frozen_bn keeps it frozen)"
    logger.info(line)
    if announce is not None and _launching_rank_zero():
        announce(line)
    return apply_overrides(recipe, ["model.norm=bn"])


def _configure_for_data(
    recipe: dict, train_data: CocoData, auto: bool | None, explicit: set[str], weights: str | None, out_dir: Path
) -> dict:
    """The recipe fitted to the training split (or as written when auto is off), recorded in config.yaml."""
    enabled = bool(recipe["auto"]["enabled"]) if auto is None else bool(auto)
    if enabled:
        stats = DatasetStatistics.of(train_data)
        recipe = auto_configure(recipe, stats, explicit, weights=weights)
        logger.info("dataset-aware configuration (--auto off keeps the recipe):\n%s", render_choices(recipe))
    else:
        recipe = {**recipe, "auto": {**recipe["auto"], "enabled": False}}
        logger.info("dataset-aware configuration off: the recipe as written")
    if _launching_rank_zero():
        atomic_write_text(out_dir / FILES["config"], recipe_to_yaml(recipe))
    return recipe


def _default_out(name: str) -> Path:
    if _OUT_ENV not in os.environ:
        os.environ[_OUT_ENV] = str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return Path(os.environ[_OUT_ENV])


def _launching_rank_zero() -> bool:
    """Before the Trainer exists: is this the process that will be (or launch) global rank 0? torchrun sets RANK,
    SLURM's srun SLURM_PROCID and SLURM_NODEID, Lightning's own launcher LOCAL_RANK and NODE_RANK."""
    env = os.environ
    rank = env.get("RANK") or env.get("SLURM_PROCID") or env.get("LOCAL_RANK") or "0"
    node = env.get("NODE_RANK") or env.get("SLURM_NODEID") or "0"
    return int(rank) == 0 and int(node) == 0


def _load_splits(data: str | Path) -> dict[str, CocoData]:
    splits = load_dataset(data)
    if "train" not in splits:
        raise UserError("no train split (annotations/instances_train.json)", data)
    if "val" not in splits:
        raise UserError("no val split (annotations/instances_val.json): training validates every epoch", data)
    if splits["val"].category_ids != splits["train"].category_ids:
        raise UserError("train and val splits have different categories", data)
    if not splits["train"].images or not splits["val"].images:
        raise UserError("the train and val splits need at least one image each", data)
    return splits


def make_loaders(recipe: dict, train_data: CocoData, val_data: CocoData) -> tuple[DataLoader, DataLoader]:
    cfg = recipe["train"]
    workers = int(cfg["num_workers"])
    batch = int(cfg["batch_size"])
    train_ds = _train_dataset(recipe, train_data)
    # validation images keep their size: the model resizes them and pastes predictions back at full resolution
    val_ds = InstanceDataset(val_data, build_transforms(recipe["input"], None, train=False, resize=False), train=False)
    common = {"num_workers": workers, "persistent_workers": workers > 0}
    return (
        DataLoader(
            train_ds, batch_size=batch, shuffle=True, drop_last=len(train_ds) > batch, collate_fn=train_collate(cfg),
            **common,
        ),
        DataLoader(val_ds, batch_size=batch, shuffle=False, collate_fn=collate_fn, **common),
    )


def _train_dataset(recipe: dict, train_data: CocoData) -> InstanceDataset:
    transforms = build_transforms(recipe["input"], recipe["train"], train=True)
    tiling = recipe["tiling"]
    if not tiling["size"]:
        return InstanceDataset(train_data, transforms, train=True)
    tiles = TiledInstanceDataset(
        train_data,
        transforms,
        tile=int(tiling["size"]),
        overlap=float(tiling["overlap"]),
        empty_fraction=float(tiling["empty_tile_fraction"]),
        seed=int(recipe["train"]["seed"]),
    )
    logger.info("training on %d tiles of %d px from %d images", len(tiles), tiling["size"], len(train_data.images))
    return tiles


def build_trainer(recipe: dict, out: Path, device: str, devices: int, num_nodes: int) -> pl.Trainer:
    cfg = recipe["train"]
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {device!r}")
    gpu = resolve_device(device).type == "cuda"
    world = int(devices) * int(num_nodes)
    strategy: Any = "auto"
    if world > 1:
        # in one CPU-only process tree, spawn the workers; elsewhere (GPUs, or a launcher such as torchrun or
        # SLURM already started each rank) Lightning's "ddp" re-runs the command once per device
        spawn = not gpu and num_nodes == 1 and "LOCAL_RANK" not in os.environ
        strategy = "ddp_spawn" if spawn else "ddp"
    max_minutes = cfg["max_minutes"]
    return pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=int(devices),
        num_nodes=int(num_nodes),
        strategy=strategy,
        precision=cfg["precision"] if gpu else "32-true",  # CPU kernels gain nothing from half precision
        max_epochs=int(cfg["epochs"]),
        max_time=timedelta(minutes=float(max_minutes)) if max_minutes else None,
        max_steps=int(cfg["max_steps"]) if cfg.get("max_steps") else -1,
        accumulate_grad_batches=int(cfg["accumulate"]),
        sync_batchnorm=bool(cfg["sync_bn"]) and gpu and world > 1,  # torch's SyncBatchNorm runs on GPUs only
        gradient_clip_val=float(cfg["grad_clip"]) if cfg["grad_clip"] else None,
        check_val_every_n_epoch=int(cfg["val_interval"]),
        num_sanity_val_steps=0,
        logger=False,
        enable_model_summary=False,
        inference_mode=False,  # the EMA swaps weights in place around validation
        default_root_dir=str(out),
        callbacks=make_callbacks(recipe, out, batch_scaling(cfg, devices, num_nodes)),
        plugins=[AtomicCheckpointIO()],
    )


def make_callbacks(recipe: dict, out: Path, scaling: BatchScaling | None = None) -> list[pl.Callback]:
    cfg = recipe["train"]
    callbacks: list[pl.Callback] = [TQDMProgressBar()]
    if cfg["ema"]:
        callbacks.append(EMACallback(decay=float(cfg["ema_decay"]), ramp=cfg["ema_ramp"]))
    callbacks += make_schedule_callbacks(cfg, scaling)  # warmup x the lr schedule; Mosaic/MixUp switch-off
    callbacks.append(RunRecorder(out))
    callbacks.append(ResumableOnFault(out / FILES["last"]))
    patience = cfg["early_stop_patience"]
    if patience:
        # judged after each validation only: a run cut mid-epoch (max_steps, max_minutes) has no new metric to judge
        early = EarlyStopping(
            monitor=VAL_METRIC, mode="max", patience=int(patience), check_finite=False, check_on_train_epoch_end=False
        )
        callbacks.append(early)
    best = ModelCheckpoint(
        dirpath=str(out),
        filename="best",
        monitor=VAL_METRIC,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # last.ckpt by a checkpoint of its own, written at the end of every training epoch (after that epoch's
    # validation, if any, and also when max_steps or max_minutes cut an epoch short): Lightning's save_last writes it
    # only in a step where the best one improved, so a run whose AP stalled would resume epochs behind where it stopped
    last = ModelCheckpoint(
        dirpath=str(out),
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    callbacks += [best, last]  # best first: trainer.checkpoint_callback is the first
    return callbacks


def _result(trainer: pl.Trainer, out: Path) -> dict[str, Any]:
    recorder = next(cb for cb in trainer.callbacks if isinstance(cb, RunRecorder))
    result_file = out / FILES["result"]
    if trainer.is_global_zero and result_file.is_file():
        # with spawned workers the records were kept in rank 0's process: its file is the truth
        result = read_json(result_file)
    else:
        result = recorder.result(done=not trainer.interrupted)
        result["paths"] = run_paths(out)
    result["is_global_zero"] = trainer.is_global_zero
    return result
