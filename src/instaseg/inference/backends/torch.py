"""Eager PyTorch backend: a torchvision-style Mask R-CNN run component by component.

torchvision's full forward ends in `transform.postprocess`, which pastes every mask at full image size
(N x H x W floats). We call the same components the model's forward calls (backbone -> rpn -> roi_heads) and stop
before that step: roi_heads already returns each instance's low-resolution mask probabilities (e.g. 28x28), which
our post-processing pastes one box at a time. Pre-processing (the model's own `transform`) is done outside by
`instaseg.inference.preprocess`, shared with exported backends, and checked equal to the model's.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection.image_list import ImageList

from instaseg.errors import UserError
from instaseg.inference.postprocess import RawDetections
from instaseg.inference.preprocess import InputSpec

_COMPONENTS = ("transform", "backbone", "rpn", "roi_heads")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a user error, not a crash later."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available (use --device cpu)")
    return device


class TorchBackend:
    """Runs a GeneralizedRCNN-like module (attributes transform, backbone, rpn, roi_heads) in eval mode."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", spec: InputSpec | None = None):
        # one-stage models (RTMDet-Ins) give raw detections themselves (`raw_outputs`) and need only a transform
        needed = ("transform",) if hasattr(model, "raw_outputs") else _COMPONENTS
        missing = [c for c in needed if not hasattr(model, c)]
        if missing:
            raise TypeError(f"{type(model).__name__} lacks {', '.join(missing)}: not a torchvision-style detector")
        if hasattr(model, "roi_heads") and not getattr(model.roi_heads, "has_mask", lambda: False)():
            raise TypeError(f"{type(model).__name__} has no mask head")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec or spec_from_transform(model.transform)

    def synchronize(self) -> None:
        """Wait for queued GPU work so stage timings measure the work, not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        """Detections per image in the resized frame, with [N,M,M] mask probabilities (not pasted)."""
        batch = batch.to(self.device)
        if hasattr(self.model, "raw_outputs"):
            return self._raw_outputs(batch, image_sizes)
        features = self.model.backbone(batch)
        if isinstance(features, torch.Tensor):  # single-map backbones, as GeneralizedRCNN.forward allows
            features = OrderedDict([("0", features)])
        images = ImageList(batch, [tuple(s) for s in image_sizes])
        proposals, _ = self.model.rpn(images, features)
        detections, _ = self.model.roi_heads(features, proposals, images.image_sizes)
        return [
            RawDetections(
                boxes=d["boxes"].float().cpu().numpy(),
                scores=d["scores"].float().cpu().numpy(),
                labels=d["labels"].cpu().numpy(),
                masks=d["masks"][:, 0].float().cpu().numpy(),
            )
            for d in detections
        ]

    def _raw_outputs(self, batch: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[RawDetections]:
        """A model with its own raw outputs (image-frame masks at ``model.mask_stride``): boxes clipped per image."""
        out = []
        for (boxes, scores, labels, masks), (h, w) in zip(self.model.raw_outputs(batch), image_sizes, strict=True):
            boxes = torch.stack(
                [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)],
                dim=1,
            )
            out.append(
                RawDetections(
                    boxes.float().cpu().numpy(),
                    scores.float().cpu().numpy(),
                    labels.cpu().numpy(),
                    masks.float().cpu().numpy(),
                    self.model.mask_stride,
                )
            )
        return out


def spec_from_transform(transform: Any, input_size: dict | None = None) -> InputSpec:
    """The model's own pre-processing settings; a checkpoint's recorded input size wins over the module's."""
    min_size = transform.min_size[-1] if isinstance(transform.min_size, (tuple, list)) else transform.min_size
    input_size = input_size or {}
    return InputSpec(
        min_size=int(input_size.get("min_size", min_size)),
        max_size=int(input_size.get("max_size", transform.max_size)),
        mean=tuple(float(v) for v in transform.image_mean),
        std=tuple(float(v) for v in transform.image_std),
        size_divisible=int(getattr(transform, "size_divisible", 32)),
    )


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[TorchBackend, dict]:
    """Backend and checkpoint info (class_names, category_ids, input, recipe) from an instaseg checkpoint."""
    from instaseg.models.checkpoint import model_from_checkpoint

    model, info = model_from_checkpoint(path, device=str(resolve_device(device)))
    spec = spec_from_transform(model.transform, info.get("input"))
    return TorchBackend(model, device, spec), info
