"""Surviving what long runs meet: a batch with a NaN/Inf loss, a data worker that dies, a kill at any moment.

- `NonFiniteGuard` drops the gradients of a step whose loss or gradients are not finite (the step is skipped and
  logged with the batch's image ids) and stops the run with `RunStopped` after too many such steps in a row.
- `ResumableOnFault` makes sure such a stop leaves a last.ckpt that ``--resume`` continues from.
- `read_resume_point` / `check_resume_fits` refuse a last.ckpt that is corrupt, from another program, or of
  another model or class list in one line, before Lightning would fail on it with a traceback.
- `reconcile_run_records` puts metrics.csv and train.log back in step with last.ckpt when a run is resumed: a
  kill between an epoch's records and its checkpoint would otherwise leave that epoch twice in them.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from instaseg.engine.outputs import rows_to_csv
from instaseg.errors import RunStopped, UserError
from instaseg.models.checkpoint import read_torch_file, state_mismatch
from instaseg.utils.io import atomic_write_text

logger = logging.getLogger("instaseg.train")

_SHOWN_IDS = 8  # image ids named per skipped step; a batch of 64 would drown the log
_EPOCH_LINE = re.compile(r" instaseg\.train: epoch (\d+): ")


class NonFiniteGuard:
    """Skips optimizer steps whose loss or gradients hold NaN/Inf; raises `RunStopped` after ``max_in_a_row``.

    The module shows it each batch (`see_batch`) and asks it before each optimizer step (`check_gradients`),
    when the gradients of every process have been averaged: all processes then take the same decision.
    With ``stop_enabled`` False (mixed precision, whose grad scaler skips overflowing steps itself) only a
    non-finite loss is skipped, and the run never stops for it.
    """

    def __init__(self, max_in_a_row: int = 5):
        self.max_in_a_row = max(1, int(max_in_a_row))
        self.stop_enabled = True
        self.skipped = 0
        self.in_a_row = 0
        self._image_ids: list[int] = []
        self._losses: dict[str, torch.Tensor] = {}

    def see_batch(self, image_ids: list[int], losses: Mapping[str, torch.Tensor]) -> None:
        self._image_ids = list(image_ids)
        self._losses = {k: v.detach() for k, v in losses.items()}

    def check_gradients(self, model: torch.nn.Module, step: int) -> None:
        """Drop this step's gradients when it is not finite (the optimizer then leaves the weights alone)."""
        bad_losses = [k for k, v in self._losses.items() if not bool(torch.isfinite(v).all())]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad_grads = self.stop_enabled and bool(grads) and not _finite_norm(grads)
        if not bad_losses and not bad_grads:
            self.in_a_row = 0
            return
        for p in model.parameters():
            p.grad = None
        self.skipped += 1
        self.in_a_row += 1
        what = ", ".join(f"{k}={float(self._losses[k]):.4g}" for k in bad_losses) or "gradients"
        logger.warning(
            "step %d skipped: non-finite %s on images %s (%d in a row, %d in all)",
            step,
            what,
            self._ids_text(),
            self.in_a_row,
            self.skipped,
        )
        if self.stop_enabled and self.in_a_row >= self.max_in_a_row:
            raise RunStopped(
                f"{self.in_a_row} steps in a row had a non-finite loss or gradients (last: step {step}, "
                f"images {self._ids_text()}); last.ckpt is resumable with --resume; if it recurs, lower train.lr "
                "or raise train.warmup_iters"
            )

    def _ids_text(self) -> str:
        shown = ", ".join(str(i) for i in self._image_ids[:_SHOWN_IDS])
        more = len(self._image_ids) - _SHOWN_IDS
        return f"[{shown}{f', +{more} more' if more > 0 else ''}]"

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.in_a_row = int(state.get("in_a_row", 0))


def _finite_norm(grads: list[torch.Tensor]) -> bool:
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)))


def is_worker_death(error: BaseException) -> bool:
    """A DataLoader worker process killed (out of memory, a signal) or gone. torch raises a RuntimeError when it
    notices; a worker killed while handing a batch over breaks the shared-memory handoff first, and the main
    process meets a ConnectionResetError (or EOFError) inside the DataLoader instead."""
    text = str(error)
    if isinstance(error, RuntimeError) and "DataLoader worker" in text and ("exited" in text or "killed" in text):
        return True
    return isinstance(error, (ConnectionError, EOFError)) and _raised_in_dataloader(error)


def _raised_in_dataloader(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if Path(frame.tb_frame.f_code.co_filename).match("torch/utils/data/dataloader.py"):
            return True
        frame = frame.tb_next
    return False


def worker_death_stop(error: BaseException) -> RunStopped:
    first = (str(error).strip() or type(error).__name__).splitlines()[0]
    return RunStopped(
        f"a data loading worker died ({first}); last.ckpt is resumable with --resume "
        "(lower train.num_workers or train.batch_size if memory ran out)"
    )


class ResumableOnFault(pl.Callback):
    """On a fault stop, keep last.ckpt (the last finished epoch) or, before any, save the state at the stop."""

    def __init__(self, last: str | Path):
        self.last = Path(last)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not (isinstance(exception, RunStopped) or is_worker_death(exception)):
            return
        if self.last.is_file():
            return
        with child_exits_unheard():
            trainer.save_checkpoint(self.last)
        logger.info("no epoch had finished: saved the state at the stop as %s", self.last)


@contextmanager
def child_exits_unheard() -> Iterator[None]:
    """SIGCHLD ignored until the block ends. Once a DataLoader worker has died, torch's SIGCHLD handler raises its
    worker-death error wherever the main thread is whenever any child process exits, as long as the dead worker
    stays registered: one in the middle of the stop's checkpoint save would leave no last.ckpt, or an empty one.
    The run is stopping for that death already. (Blocking the signal in this thread is not enough: another thread
    takes it, and Python runs the handler in the main thread all the same.)"""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


@dataclass
class ResumePoint:
    """What a run folder's last.ckpt holds that must match the resumed run, read once before training."""

    path: Path
    class_names: list[str]
    shapes: dict[str, torch.Size] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_resume_point(path: str | Path) -> ResumePoint:
    """Read last.ckpt; a corrupt file, or one that is not an instaseg training checkpoint, is a UserError."""
    path = Path(path)
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise UserError("not a training checkpoint (no Lightning training state): cannot resume from it", path)
    part = ckpt.get("instaseg")
    if not isinstance(part, Mapping) or "class_names" not in part:
        raise UserError("a Lightning checkpoint of another program (no 'instaseg' entry): cannot resume from it", path)
    recorder = ckpt.get("callbacks", {}).get("RunRecorder", {})
    return ResumePoint(
        path=path,
        class_names=[str(n) for n in part["class_names"]],
        shapes={k: v.shape for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)},
        rows=list(recorder.get("rows", [])),
    )


def check_resume_fits(point: ResumePoint, module: torch.nn.Module, class_names: list[str]) -> None:
    """The resumed run must have the checkpoint's classes and model; say which differs, in one line."""
    if list(class_names) != point.class_names:
        raise UserError(
            f"trained on classes {point.class_names} but the dataset has {list(class_names)}: "
            "resume on the dataset the run was started with",
            point.path,
        )
    problem = state_mismatch(module.state_dict(), {k: torch.empty(s, device="meta") for k, s in point.shapes.items()})
    if problem:
        raise UserError(f"does not fit this run's model ({problem}); resume with the run's own recipe", point.path)


def reconcile_run_records(out: Path, point: ResumePoint | None, metrics_name: str, log_name: str) -> str | None:
    """Rewrite metrics.csv from the checkpoint's rows and drop train.log's epoch lines the checkpoint lacks;
    returns a line to log saying so. Without a checkpoint (a run killed in its first epoch, started again in
    its folder) every earlier epoch line goes.

    A kill after an epoch's records were written but before its checkpoint was replaced leaves them ahead of
    last.ckpt; the resumed run redoes that epoch and writes its lines again, so each epoch appears once.
    """
    for stale in out.glob(".*.tmp"):  # a write that a kill cut short (atomic_write's temporary files)
        stale.unlink(missing_ok=True)
    rows = point.rows if point is not None else []
    kept = {int(r["epoch"]) for r in rows}
    if point is not None or (out / metrics_name).exists():
        atomic_write_text(out / metrics_name, rows_to_csv(rows))
    dropped = 0
    log = out / log_name
    if log.is_file():
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        keep = [line for line in lines if not ((m := _EPOCH_LINE.search(line)) and int(m.group(1)) not in kept)]
        dropped = len(lines) - len(keep)
        if dropped:
            atomic_write_text(log, "".join(keep))
    note = f"; dropped {dropped} epoch line(s) the stopped run wrote after it" if dropped else ""
    if point is None:
        return f"starting again in a run folder without a checkpoint{note}" if dropped else None
    where = f"after epoch {max(kept)}" if kept else "before the end of the first epoch"
    return f"resuming from last.ckpt {where}{note}"
