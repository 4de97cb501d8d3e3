"""What the ONNX Runtime and OpenVINO backends share: metadata -> InputSpec, and a batch run one image at a time.

An exported graph takes one image (see `instaseg.export.graph`): each image of a batch gets only its own padding
(to a multiple of the stride, or to the fixed size of a static graph), exactly what the eager model sees for a
batch of one, so results do not depend on which images share a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from instaseg.errors import UserError
from instaseg.inference.postprocess import RawDetections
from instaseg.models.detector import padded_size
from instaseg.models.metadata import from_strings, spec_from_metadata


def graph_inputs(
    batch: torch.Tensor, image_sizes: list[tuple[int, int]], graph: dict, stride: int
) -> Iterator[dict[str, np.ndarray]]:
    """Per image, the feed of a one-image graph: ``images`` [1,3,h',w'] float32 and ``image_size`` (h, w) int64."""
    batch = batch.detach().to("cpu", torch.float32)
    static = None if graph.get("dynamic", True) else (int(graph["height"]), int(graph["width"]))
    for i, (h, w) in enumerate(image_sizes):
        if static is None:
            image = batch[i : i + 1, :, : padded_size(h, stride), : padded_size(w, stride)]
        else:
            if h > static[0] or w > static[1]:
                raise UserError(f"a {h}x{w} input does not fit this model's fixed {static[0]}x{static[1]} graph")
            image = torch.zeros((1, 3, *static), dtype=torch.float32)
            image[..., :h, :w] = batch[i, :, :h, :w]
        yield {"images": np.ascontiguousarray(image.numpy()), "image_size": np.array([h, w], dtype=np.int64)}


def raw_detections(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray, mask_stride: int | None = None
) -> RawDetections:
    return RawDetections(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float32).reshape(-1),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        masks=np.asarray(masks, dtype=np.float32),
        mask_stride=mask_stride,
    )


class ExportedBackend:
    """Base of the exported-model backends: subclasses set ``name`` and implement ``run(feed) -> 4 arrays``."""

    name = "exported"

    def __init__(self, meta_strings: dict[str, str], source: str | Path):
        self.meta = from_strings(meta_strings, source)
        self.spec = spec_from_metadata(self.meta)
        self.graph = dict(self.meta["graph"])
        self.device = torch.device("cpu")  # where pre-processing runs; the runtime copies the input itself

    def synchronize(self) -> None:
        """Runtime calls return when their outputs are ready: nothing is queued."""

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        stride = self.spec.size_divisible
        mask_stride = self.graph.get("mask_stride")
        feeds = graph_inputs(batch, image_sizes, self.graph, stride)
        return [raw_detections(*self.run(feed), mask_stride=mask_stride) for feed in feeds]

    def info(self) -> dict:
        """What `create_model` needs (class_names, category_ids, input) plus the rest of the metadata."""
        return dict(self.meta)
