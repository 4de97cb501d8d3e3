"""The run folder's records: metrics.csv, curves.png and train_result.json, rewritten (atomically) each epoch.

metrics.csv has one row per epoch: step, learning rate, the train losses, the validation numbers (``val_mask_AP``,
``val_box_AP50``...) and each class's mask AP (``val_mask_AP[<class name>]``).

`RunRecorder` keeps one row per epoch (its state travels in checkpoints, so a resumed run rewrites the same
history). Only rank 0 writes; the train-loss means are reduced over processes first (a collective call that
every rank makes).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from instaseg.engine.callbacks import VAL_METRIC
from instaseg.utils.io import atomic_write, atomic_write_json, atomic_write_text

logger = logging.getLogger("instaseg.train")

FILES = {
    "config": "config.yaml",
    "log": "train.log",
    "metrics": "metrics.csv",
    "curves": "curves.png",
    "result": "train_result.json",
    "best": "best.ckpt",
    "last": "last.ckpt",
}


# the columns repeated in train.log's one line per epoch (metrics.csv has them all)
_LOGGED = ("step", "lr", "train_loss", "train_loss_mask", "val_mask_AP", "val_mask_AP50", "val_box_AP")


def run_paths(out: Path) -> dict[str, str]:
    return {key: str(out / name) for key, name in FILES.items()}


def attach_log(path: Path) -> logging.Handler | None:
    """Send instaseg's and Lightning's log records to ``path`` (appending); None when already attached."""
    path = Path(path).resolve()
    root = logging.getLogger("instaseg")
    if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("instaseg", "lightning.pytorch"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    return handler


def detach_log(handler: logging.Handler | None) -> None:
    if handler is None:
        return
    for name in ("instaseg", "lightning.pytorch"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()


class RunRecorder(pl.Callback):
    """Writes the per-epoch records of a run into ``out``."""

    def __init__(self, out: str | Path, monitor: str = VAL_METRIC):
        self.out = Path(out)
        self.monitor_key = monitor.split("/", 1)[-1]
        self.rows: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, Any] = {}
        self.best_per_class: dict[str, Any] = {}
        self._val_epoch: int | None = None
        self._log_handler: logging.Handler | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # spawned worker processes start without the launching process's log handler
        if trainer.is_global_zero:
            self._log_handler = attach_log(self.out / FILES["log"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        detach_log(self._log_handler)
        self._log_handler = None

    # validation at the end of an epoch runs before on_train_epoch_end, and checkpoints are saved in
    # on_validation_end after this callback: so the row goes in here, and the checkpoint carries it
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = dict(getattr(pl_module, "last_val_metrics", {}))
        per_class = metrics.pop("per_class", {})
        val = {f"val_{k}": v for k, v in metrics.items()}
        # each class's mask AP gets a column of its own: which classes learn, and when
        val |= {f"val_mask_AP[{name}]": row["mask_AP"] for name, row in per_class.items() if "mask_AP" in row}
        self._add_row(trainer, pl_module, val)
        self._val_epoch = trainer.current_epoch
        value = metrics.get(self.monitor_key, float("nan"))
        best = self.best_metrics.get(self.monitor_key, float("nan"))
        if self.best_epoch is None or _better(value, best):
            self.best_epoch, self.best_metrics, self.best_per_class = trainer.current_epoch, metrics, per_class
        self.write(trainer, done=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_epoch != trainer.current_epoch:  # an epoch without validation still gets its row
            self._add_row(trainer, pl_module, {})
            self.write(trainer, done=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, done=True, stop_reason=stop_reason(trainer))

    def _add_row(self, trainer: pl.Trainer, pl_module: pl.LightningModule, val: dict[str, Any]) -> None:
        losses = pl_module.epoch_train_losses() if hasattr(pl_module, "epoch_train_losses") else {}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "lr": _lr(trainer), **losses, **val}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k in _LOGGED)
            logger.info("epoch %d: %s", row["epoch"], shown)

    def result(self, done: bool, stop_reason: str | None = None) -> dict[str, Any]:
        return {
            "done_flag": bool(done),
            "stop_reason": stop_reason,
            "epochs_completed": len(self.rows),
            "best_epoch": self.best_epoch,
            "best_metrics": _json_numbers(self.best_metrics),
            "best_per_class": self.best_per_class,
            "out": str(self.out),
            "paths": run_paths(self.out),
        }

    def write(self, trainer: pl.Trainer, done: bool, stop_reason: str | None = None) -> None:
        if not trainer.is_global_zero:
            return
        atomic_write_text(self.out / FILES["metrics"], rows_to_csv(self.rows))
        try:
            plot_curves(self.rows, self.out / FILES["curves"])
        except Exception as e:  # a plotting problem must never stop training
            logger.warning("could not draw curves.png: %s", e)
        atomic_write_json(self.out / FILES["result"], self.result(done, stop_reason))

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "best_per_class": self.best_per_class,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.best_epoch = state_dict["best_epoch"]
        self.best_metrics = dict(state_dict["best_metrics"])
        self.best_per_class = dict(state_dict.get("best_per_class", {}))


def stop_reason(trainer: pl.Trainer) -> str:
    from lightning.pytorch.callbacks import EarlyStopping, Timer

    for cb in trainer.callbacks:
        if isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0:
            return "early_stopping"
        if isinstance(cb, Timer) and cb._duration is not None and cb.time_remaining() <= 0:
            return "max_time"
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return "max_steps"
    return "max_epochs"


def _better(value: float, best: float) -> bool:
    if math.isnan(value):
        return False
    return math.isnan(best) or value > best


def _lr(trainer: pl.Trainer) -> float:
    return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _json_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """json cannot hold NaN: unknown numbers become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Losses, learning rate and AP per epoch in one picture (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        (axes[0], "losses", lambda k: k.startswith("train_")),
        (axes[2], "validation AP", lambda k: k in ("val_mask_AP", "val_box_AP", "val_mask_AP50", "val_box_AP50")),
    ]
    for ax, title, wanted in panels:
        keys = sorted({k for r in rows for k in r if wanted(k)})
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if _is_number(r.get(key))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_title(title)
        if keys:
            ax.legend(fontsize=7)
    axes[1].plot([r["epoch"] for r in rows], [r["lr"] for r in rows], marker="o")
    axes[1].set_title("learning rate (end of epoch)")
    axes[1].set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    finally:
        plt.close(fig)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
