"""INT8 post-training quantization of an OpenVINO model with NNCF, calibrated on the user's own images.

The calibration images go through the same pre-processing and one-image feeds as inference
(`instaseg.inference.backends.exported.graph_inputs`), so the activation ranges NNCF measures are the ones the
deployed model will see.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.errors import UserError
from instaseg.inference.preprocess import InputSpec, preprocess
from instaseg.utils.progress import track

logger = logging.getLogger(__name__)
DEFAULT_CALIB_SIZE = 100


def calibration_images(source: str | Path, count: int = DEFAULT_CALIB_SIZE) -> list[np.ndarray]:
    """Up to ``count`` images, taken evenly over the sorted list so a folder ordered by scene is sampled across
    scenes. ``source``: a dataset root (its train split's images, so the validation images stay unseen for
    comparing INT8 with fp32), a folder (searched recursively), a glob or one image."""
    from instaseg.data.coco import load_coco, split_file
    from instaseg.inference.sources import iter_inputs

    if count < 1:
        raise UserError(f"the calibration subset needs at least one image, got {count}")
    inputs: str | list[Path] = str(source)
    if split_file(source, "train").is_file():
        train = load_coco(split_file(source, "train"))
        inputs = sorted(train.image_path(record) for record in train.images)
    items = [item for item in iter_inputs(inputs) if item.frame_index is None]
    if not items:
        raise UserError("no images found for calibration", source)
    picks = np.unique(np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int))
    return [items[i].read() for i in picks]


def calibration_feeds(images: list[np.ndarray], spec: InputSpec, graph: dict) -> list[dict[str, np.ndarray]]:
    from instaseg.inference.backends.exported import graph_inputs

    feeds = []
    for image in track(images, "preparing calibration images", stderr=False):
        batch, sizes = preprocess([image], spec)
        feeds.extend(graph_inputs(batch, sizes, graph, spec))
    return feeds


def quantize_openvino(model: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    """NNCF post-training INT8 quantization (convolutions and matrix products) of an `openvino.Model`."""
    import nncf

    logger.info("calibrating INT8 on %d images", len(feeds))
    return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds))
