"""instaseg: instance segmentation from annotated images to deployed models."""

from __future__ import annotations

from typing import Any

from instaseg.version import __version__

__all__ = ["__version__", "create_model", "evaluate", "train"]


def train(*args: Any, **kwargs: Any) -> dict:
    """Train a recipe on a COCO dataset; see `instaseg.engine.train.train`."""
    from instaseg.engine.train import train as _train

    return _train(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> dict:
    """COCO box and mask AP of a checkpoint on a dataset; see `instaseg.engine.evaluate.evaluate`."""
    from instaseg.engine.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def create_model(*args: Any, **kwargs: Any) -> Any:
    """Load a checkpoint (or exported model) for prediction; see `instaseg.inference.predictor.create_model`."""
    from instaseg.inference.predictor import create_model as _create_model

    return _create_model(*args, **kwargs)
