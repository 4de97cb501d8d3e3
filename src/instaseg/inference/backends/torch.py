"""Eager PyTorch backend: any `instaseg.models.detector.Detector`, through its ``raw_forward``.

The detector stops before pasting masks (each architecture's ``raw_forward``); the shared post-processing pastes
them one box at a time. Pre-processing is `instaseg.inference.preprocess` by the detector's ``input_spec``,
shared with the exported backends.
"""

from __future__ import annotations

from pathlib import Path

import torch

from instaseg.errors import UserError
from instaseg.inference.postprocess import RawDetections
from instaseg.models.detector import Detector, InputSpec
from instaseg.utils.device import resolve_device

__all__ = ["TorchBackend", "load", "resolve_device"]


class TorchBackend:
    """Runs a `Detector` in eval mode on ``device``; ``amp`` (CUDA only): convolutions and matrix products in fp16
    under autocast, with the weights in channels-last layout that tensor cores read fastest."""

    name = "torch"

    def __init__(
        self, model: Detector, device: str | torch.device = "cpu", spec: InputSpec | None = None, amp: bool = False
    ):
        if not isinstance(model, Detector):
            raise TypeError(f"{type(model).__name__} is not an instaseg Detector")
        self.device = resolve_device(device)
        if amp and self.device.type != "cuda":
            raise UserError("fp16 autocast runs on CUDA; on a CPU export to OpenVINO (--precision bf16) instead")
        self.amp = amp
        self.model = model.to(self.device).eval()
        if amp:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.spec = spec or model.input_spec

    def synchronize(self) -> None:
        """Wait for queued GPU work so stage timings measure the work, not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        """Detections per image in the resized frame, with low-resolution mask probabilities (not pasted)."""
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            outputs = self.model.raw_forward(batch.to(self.device), [tuple(s) for s in image_sizes])
        return [RawDetections.from_output(out, self.model) for out in outputs]


def load(path: str | Path, device: str | torch.device = "cpu", amp: bool = False) -> tuple[TorchBackend, dict]:
    """Backend and checkpoint info (class_names, category_ids, input, recipe) from an instaseg checkpoint."""
    from instaseg.models.factory import model_from_checkpoint

    # the model is built with the checkpoint's recorded input size, so its input_spec is already the one to use
    model, info = model_from_checkpoint(path, device=str(resolve_device(device)))
    return TorchBackend(model, device, amp=amp), info
