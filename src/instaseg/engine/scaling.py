"""The linear scaling rule (Goyal et al. 2017): learning rate and warmup for the batch a run actually trains with.

A recipe states its learning rate and warmup for ``train.base_batch`` images per optimizer step, the total batch
of the published run (e.g. 16 = 8 GPUs x 2 images). A run takes ``devices x nodes x batch_size x accumulate``
images per optimizer step; it trains at ``lr x total / base_batch`` and warms up over the same number of images,
``warmup_iters x base_batch / total`` steps. ``base_batch: null`` turns the rule off (lr and warmup as written).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchScaling:
    """What a run trains with, and what the recipe stated it for."""

    devices: int
    num_nodes: int
    batch_size: int
    accumulate: int
    base_batch: int | None  # None: no scaling
    recipe_lr: float
    recipe_warmup_iters: int
    warmup_epochs: float | None
    published: str | None = None  # the published config the recipe's lr and base_batch come from

    @property
    def total_batch(self) -> int:
        return self.devices * self.num_nodes * self.batch_size * self.accumulate

    @property
    def lr_scale(self) -> float:
        return 1.0 if self.base_batch is None else self.total_batch / self.base_batch

    @property
    def lr(self) -> float:
        return self.recipe_lr * self.lr_scale

    @property
    def warmup_steps(self) -> int | None:
        """Optimizer steps of warmup (None: the warmup is counted in epochs, already a share of the data)."""
        if self.warmup_epochs is not None:
            return None
        return round(self.recipe_warmup_iters / self.lr_scale)

    def describe(self) -> str:
        """One line for the log: the lr and warmup chosen, and the published numbers they were scaled from."""
        batch = (
            f"{self.total_batch} images per optimizer step ({self.devices} device(s) x {self.num_nodes} node(s) x "
            f"batch {self.batch_size} x accumulate {self.accumulate})"
        )
        if self.warmup_epochs is not None:
            warmup = f"warmup {self.warmup_epochs:g} epoch(s)"
        else:
            warmup = f"warmup {self.warmup_steps} steps"
        if self.base_batch is None:
            return f"learning rate {self.lr:g} for {batch}, as the recipe states it (train.base_batch null); {warmup}"
        source = "published" if self.published else "recipe's"
        where = f"{self.published}: " if self.published else ""
        if self.warmup_epochs is None:
            warmup += f", the images of the {source} {self.recipe_warmup_iters} steps of {self.base_batch}"
        return (
            f"learning rate {self.lr:g} for {batch}, scaled by {self.total_batch}/{self.base_batch} from the "
            f"{source} {self.recipe_lr:g} for {self.base_batch} images per step ({where}train.lr, train.base_batch), "
            f"the linear scaling rule; {warmup}"
        )


def batch_scaling(
    train_cfg: dict, devices: int = 1, num_nodes: int = 1, published: str | None = None
) -> BatchScaling:
    """The scaling for a complete train section run on ``devices`` per node and ``num_nodes`` nodes; ``published``:
    the published config the recipe follows (named in the description)."""
    return BatchScaling(
        devices=max(1, int(devices)),
        num_nodes=max(1, int(num_nodes)),
        batch_size=int(train_cfg["batch_size"]),
        accumulate=int(train_cfg["accumulate"]),
        base_batch=None if train_cfg["base_batch"] is None else int(train_cfg["base_batch"]),
        recipe_lr=float(train_cfg["lr"]),
        recipe_warmup_iters=int(train_cfg["warmup_iters"]),
        warmup_epochs=None if train_cfg["warmup_epochs"] is None else float(train_cfg["warmup_epochs"]),
        published=published,
    )
