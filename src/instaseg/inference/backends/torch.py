"""Eager PyTorch backend: any `instaseg.models.detector.Detector`, through its ``raw_forward``.

The detector stops before pasting masks (each architecture's ``raw_forward``); the shared post-processing pastes
them one box at a time. Pre-processing is `instaseg.inference.preprocess` by the detector's ``input_spec``,
shared with the exported backends.
"""

from __future__ import annotations

from pathlib import Path

import torch

from instaseg.inference.postprocess import RawDetections
from instaseg.models.detector import Detector, InputSpec
from instaseg.utils.device import resolve_device

__all__ = ["TorchBackend", "load", "resolve_device"]


class TorchBackend:
    """Runs a `Detector` in eval mode on ``device``."""

    name = "torch"

    def __init__(self, model: Detector, device: str | torch.device = "cpu", spec: InputSpec | None = None):
        if not isinstance(model, Detector):
            raise TypeError(f"{type(model).__name__} is not an instaseg Detector")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec or model.input_spec

    def synchronize(self) -> None:
        """Wait for queued GPU work so stage timings measure the work, not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        """Detections per image in the resized frame, with low-resolution mask probabilities (not pasted)."""
        outputs = self.model.raw_forward(batch.to(self.device), [tuple(s) for s in image_sizes])
        return [RawDetections.from_output(out, self.model.mask_stride) for out in outputs]


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[TorchBackend, dict]:
    """Backend and checkpoint info (class_names, category_ids, input, recipe) from an instaseg checkpoint."""
    from instaseg.models.checkpoint import model_from_checkpoint

    # the model is built with the checkpoint's recorded input size, so its input_spec is already the one to use
    model, info = model_from_checkpoint(path, device=str(resolve_device(device)))
    return TorchBackend(model, device), info
