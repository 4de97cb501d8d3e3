"""The LightningModule around a `Detector`: losses in training, COCO AP in validation.

Validation predicts through the same `Predictor` users call (pre-processing, the torch backend's ``raw_forward``,
post-processing), so the AP that picks best.ckpt is the AP `instaseg eval` and `instaseg predict` give.
Its predictions are turned into COCO records on each process, gathered to rank 0 (first copy of an image wins:
a distributed sampler pads the last batch with repeated images), scored there, and the numbers are broadcast
back so every process takes the same early-stopping, learning-rate and checkpoint decisions.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from instaseg.data.coco import CocoData
from instaseg.engine.callbacks import EMACallback, find_callback
from instaseg.engine.faults import NonFiniteGuard
from instaseg.engine.schedules import build_optimizer
from instaseg.evaluation.coco import CocoEvaluator, predictions_to_coco_results
from instaseg.inference.backends.torch import TorchBackend
from instaseg.inference.predictor import Predictor
from instaseg.inference.tiling import TilingOptions
from instaseg.models.checkpoint import checkpoint_payload
from instaseg.models.detector import Detector

logger = logging.getLogger(__name__)

# the numbers logged as val/<name> (all of coco_metrics' flat keys are kept in `last_val_metrics`)
LOGGED_METRICS = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50", "box_AP75")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class InstanceSegModule(pl.LightningModule):
    """Trains ``model`` (train mode: ``model(images, targets) -> losses``) and scores it on ``val_gt``."""

    def __init__(
        self,
        model: Detector,
        recipe: dict,
        class_names: list[str],
        category_ids: list[int],
        val_gt: CocoData | None = None,
    ):
        super().__init__()
        self.model = model
        # the training pipeline resizes (multi-scale, scale jitter, batch sizes drawn per batch): the model keeps sizes
        self.model.keep_training_sizes()
        self.recipe = recipe
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.val_gt = val_gt
        self.max_dets = int(recipe["eval"]["max_dets"])
        self.finite_guard = NonFiniteGuard(int(recipe["train"].get("max_nonfinite_steps", 5)))
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0
        self._val_records: dict[int, list[dict]] = {}
        self.last_val_metrics: dict[str, Any] = {}
        self._threads_before: int | None = None

    def setup(self, stage: str) -> None:
        # CPU processes of one machine share its cores: without this each would start one thread per core
        self._threads_before = torch.get_num_threads()
        if self.trainer.world_size > 1 and self.trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.trainer.num_devices)))

    def teardown(self, stage: str) -> None:
        # rank 0 is the caller's own process (the API, a notebook): its thread count is given back after the fit
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return self.model(images)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the recipe's optimizer (SGD or AdamW); the learning rate itself is driven by the schedule callback
        return build_optimizer(self.model, self.recipe["train"])

    # ---- training ----
    def on_train_epoch_start(self) -> None:
        self._loss_sums, self._loss_count = {}, 0

    def training_step(self, batch: tuple[list, list], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.finite_guard.see_batch([int(t["image_id"]) for t in targets], losses)
        if not torch.isfinite(loss):
            # still returned: every process then runs backward (DDP needs it) and the guard drops the gradients
            return loss
        for name, value in losses.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach()
        self._loss_sums["loss"] = self._loss_sums.get("loss", 0.0) + loss.detach()
        self._loss_count += 1
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(images))
        self.log("lr", lr, prog_bar=True, batch_size=len(images))
        return loss

    @property
    def strict_finite(self) -> bool:
        """Whether non-finite steps stop the run: AMP skips overflowing steps itself; in fp32 they are divergence."""
        return self.finite_guard.stop_enabled

    @strict_finite.setter
    def strict_finite(self, value: bool) -> None:
        self.finite_guard.stop_enabled = bool(value)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.finite_guard.check_gradients(self.model, self.global_step)

    def epoch_train_losses(self) -> dict[str, float]:
        """Mean of each loss over this epoch's steps so far, averaged over processes (a collective call)."""
        names = sorted(self._loss_sums)
        if not names:
            return {}
        sums = torch.stack([torch.as_tensor(self._loss_sums[n], device=self.device).float() for n in names])
        means = sums / max(1, self._loss_count)
        means = self.trainer.strategy.reduce(means, reduce_op="mean")
        return {f"train_{n}": float(v) for n, v in zip(names, means.tolist(), strict=True)}

    # ---- validation ----
    def on_validation_epoch_start(self) -> None:
        self._val_records = {}
        # every detection the model keeps (its recipe's eval.score_threshold and max_dets), as `instaseg eval`
        # a model trained on tiles is validated as it will predict: on tiles plus the whole image, merged
        tiling = TilingOptions.from_info({"recipe": self.recipe})
        backend = TorchBackend(self.model, self.device)
        self._val_predictor = Predictor(backend, self.class_names, threshold=0.0, tiling=tiling)

    def validation_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        images, targets = batch
        for target, det in zip(targets, self._val_predictor.detect(images), strict=True):
            image_id = int(target["image_id"])
            size = tuple(int(s) for s in target["orig_size"])
            output = {"boxes": det.boxes, "labels": det.labels, "scores": det.scores, "masks": det.rles}
            self._val_records[image_id] = predictions_to_coco_results(image_id, output, self.category_ids, size)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        per_rank = [self._val_records]
        if _distributed():
            per_rank = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, self._val_records)
        metrics: dict[str, Any] = {}
        if self.trainer.is_global_zero:
            metrics = self._score(per_rank)
        if _distributed():
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        self.last_val_metrics = metrics
        for name in LOGGED_METRICS:
            value = metrics.get(name, float("nan"))
            self.log(f"val/{name}", float(value), prog_bar=name == "mask_AP", sync_dist=True)  # equal on all ranks

    def _score(self, per_rank: list[dict[int, list[dict]]]) -> dict[str, Any]:
        merged: dict[int, list[dict]] = {}
        for records in per_rank:
            for image_id, recs in records.items():
                merged.setdefault(image_id, recs)  # padded duplicates from the distributed sampler count once
        if self.val_gt is None:
            return {}
        evaluator = CocoEvaluator(self.val_gt, max_dets=self.max_dets)
        for recs in merged.values():
            evaluator.add_results(recs)
        metrics = evaluator.compute()
        flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        flat["per_class"] = metrics.get("per_class", {})
        flat["images"] = len(merged)
        return flat

    # ---- checkpoints ----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the "instaseg" part (EMA weights when EMA is on) so best.ckpt serves `model_from_checkpoint`."""
        ema = find_callback(self.trainer, EMACallback) if self._trainer is not None else None
        weights = ema.ema.state if ema is not None and ema.ema.state else self.model.state_dict()
        checkpoint["instaseg"] = checkpoint_payload(weights, self.recipe, self.class_names, self.category_ids)
        checkpoint["nonfinite_steps"] = self.finite_guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "nonfinite_steps" in checkpoint:
            self.finite_guard.load_state_dict(checkpoint["nonfinite_steps"])
