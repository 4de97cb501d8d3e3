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
from instaseg.models.detector import InputSpec
from instaseg.models.metadata import from_strings, graph_from_metadata, spec_from_metadata


def graph_inputs(
    batch: torch.Tensor, image_sizes: list[tuple[int, int]], graph: dict, spec: InputSpec
) -> Iterator[dict[str, np.ndarray]]:
    """Per image, the feed of a one-image graph: ``images`` [1,3,h',w'] float32 (the image on its own padded
    frame, or on the static graph's) and ``image_size`` (h, w) int64."""
    batch = batch.detach().to("cpu", torch.float32)
    static = None if graph.get("dynamic", True) else (int(graph["height"]), int(graph["width"]))
    for i, (h, w) in enumerate(image_sizes):
        frame_h, frame_w = spec.padded_frame(h, w)
        # a static graph whose size is the image's own padded frame takes that frame as the dynamic path does: no
        # second canvas to fill and copy into
        if static is None or static == (frame_h, frame_w):
            image = batch[i : i + 1, :, :frame_h, :frame_w]
        else:
            if h > static[0] or w > static[1]:
                raise UserError(f"a {h}x{w} input does not fit this model's fixed {static[0]}x{static[1]} graph")
            image = spec.canvas(1, *static)
            image[..., :h, :w] = batch[i, :, :h, :w]
        yield {"images": np.ascontiguousarray(image.numpy()), "image_size": np.array([h, w], dtype=np.int64)}


def raw_detections(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray, graph: dict
) -> RawDetections:
    """A graph's four outputs, read by the mask layout its metadata states (older exports: probabilities, cut
    to boxes, per-box masks pasted torchvision's way, image-frame masks resampled in one step)."""
    return RawDetections(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float32).reshape(-1),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        masks=np.asarray(masks, dtype=np.float32),
        mask_stride=graph.get("mask_stride"),
        mask_logits=bool(graph.get("mask_logits", False)),
        mask_box_crop=bool(graph.get("mask_box_crop", True)),
        mask_paste=str(graph.get("mask_paste", "torchvision")),
        mask_resample=str(graph.get("mask_resample", "direct")),
    )


class ExportedBackend:
    """Base of the exported-model backends: subclasses set ``name`` and implement ``run(feed) -> 4 arrays``."""

    name = "exported"

    def __init__(self, meta_strings: dict[str, str], source: str | Path):
        self.meta = from_strings(meta_strings, source)
        self.spec = spec_from_metadata(self.meta, source)
        self.graph = graph_from_metadata(self.meta, source)
        self.device = torch.device("cpu")  # where pre-processing runs; the runtime copies the input itself

    def synchronize(self) -> None:
        """Runtime calls return when their outputs are ready: nothing is queued."""

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        feeds = graph_inputs(batch, image_sizes, self.graph, self.spec)
        return [raw_detections(*self.run(feed), self.graph) for feed in feeds]

    def info(self) -> dict:
        """What `create_model` needs (class_names, category_ids, input) plus the rest of the metadata."""
        return dict(self.meta)
