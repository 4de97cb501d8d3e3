"""torchvision's `GeneralizedRCNNTransform` that pads onto a canvas: at least a ``max_size`` square, filled with a
chosen pixel value, as MMDetection's RTMDet pipeline pads every picture to 640 x 640 with grey 114.

`instaseg.models.detector.resize_transform` builds it when an architecture asks for such padding; the shared
pre-processing (`instaseg.inference.preprocess`) pads the same way by the `InputSpec` read from it
(`instaseg.models.padding` holds the arithmetic both use).
"""

from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from instaseg.models.padding import filled_batch, normalised_fill, padded_frame


class CanvasTransform(GeneralizedRCNNTransform):
    """Resize and normalise as `GeneralizedRCNNTransform`; pad each batch to ``InputSpec.padded_frame`` of its
    largest image with ``pad_value`` (a pixel on [0, 1] before normalisation; None: zero after it)."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        mean: list[float],
        std: list[float],
        pad_to_square: bool,
        pad_value: float | None,
    ):
        super().__init__(min_size, max_size, mean, std, size_divisible=32)
        self.pad_to_square, self.pad_value = bool(pad_to_square), pad_value

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        square = int(self.max_size) if self.pad_to_square else None
        frames = [padded_frame(int(img.shape[-2]), int(img.shape[-1]), size_divisible, square) for img in images]
        height, width = max(f[0] for f in frames), max(f[1] for f in frames)
        fill = normalised_fill(tuple(self.image_mean), tuple(self.image_std), self.pad_value)
        batch = filled_batch(fill, len(images), height, width, images[0].device).to(images[0].dtype)
        for i, img in enumerate(images):
            batch[i, :, : img.shape[-2], : img.shape[-1]] = img
        return batch
