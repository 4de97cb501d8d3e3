"""How a resized image is padded into the network's input: the frame it gets alone, and the value it is padded with.

Shared by `instaseg.models.detector.InputSpec` (the contract the pre-processing of every backend follows) and
`instaseg.models.canvas.CanvasTransform` (the eager model's own pre-processing).
"""

from __future__ import annotations

from typing import Any

import torch

from instaseg.utils.normalisation import normalised_pixel


def padded_frame(height: Any, width: Any, divisor: int, square: int | None = None) -> tuple[Any, Any]:
    """(h, w) rounded up to multiples of ``divisor``, and at least ``square`` x ``square`` when given. Python ints,
    or traced 0-d int64 tensors (the exported graph's ``image_size``)."""
    frame = [((v + divisor - 1) // divisor) * divisor for v in (height, width)]
    if square is not None:
        side = ((square + divisor - 1) // divisor) * divisor
        frame = [v.clamp(min=side) if isinstance(v, torch.Tensor) else max(v, side) for v in frame]
    return frame[0], frame[1]


def normalised_fill(
    mean: tuple[float, ...], std: tuple[float, ...], value: float | None, arithmetic: str = "unit"
) -> tuple[float, ...]:
    """The padding's value per channel after normalisation: the pixel ``value`` (on [0, 1]) normalised in the
    picture's ``arithmetic`` (the same float32 a pixel of that grey in the picture gets, as MMDetection pads the
    uint8 picture before normalising it), or zeros."""
    if value is None:
        return tuple(0.0 for _ in mean)
    return normalised_pixel(value, mean, std, arithmetic)


def filled_batch(fill: tuple[float, ...], batch: int, height: int, width: int, device: Any = "cpu") -> torch.Tensor:
    """A [batch,C,height,width] float32 batch holding only the padding value (images are then copied in)."""
    value = torch.tensor(fill, dtype=torch.float32, device=device)[:, None, None]
    return value.expand(len(fill), height, width)[None].repeat(batch, 1, 1, 1)
