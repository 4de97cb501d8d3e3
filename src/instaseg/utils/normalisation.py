"""The arithmetic of the normalisation: how a picture's values become the network's input, to the float32 bit.

Shared by the architectures' input spec (`instaseg.models.detector.InputSpec`, which the pre-processing of every
backend follows, a uint8 picture through a table of its 256 levels), the eager model's own transform
(`instaseg.models.canvas`) and the padding's value (`instaseg.models.padding`), so that they give the same floats.

The mean and std are on [0, 1] RGB pixels (``InputSpec.mean`` / ``std``) whatever the arithmetic; each reference
computes with them its own way (``normalisation``), and float32 rounds each way differently (by up to 4.8e-7 with
ImageNet's mean and std, in 483 of the 768 values of a uint8 picture):

- ``unit``: ``(v / 255 - mean) / std`` in float32 (torchvision's ``GeneralizedRCNNTransform``);
- ``pixel``: ``(v - 255 mean) / (255 std)`` in float32, the pixel-unit constants being ``255 x mean`` and
  ``255 x std`` rounded to 6 decimals, i.e. the literals of MMDetection's configs (``mean=[123.675, 116.28,
  103.53], std=[58.395, 57.12, 57.375]``): MMDetection's ``DetDataPreprocessor`` on the uint8 picture;
- ``paddle``: ``v x float32(1 / 255)`` in float32 (a product, which rounds otherwise than ``v / 255`` on 126 of the
  256 levels), then ``- mean`` and ``/ std`` each computed in float64 and rounded to float32: PaddleDetection's
  ``NormalizeImage`` (``is_scale``: ``im *= 1.0 / 255.0`` on the float32 picture, then float64 mean and std arrays
  in place; with mean 0 and std 1, or ``norm_type: none``, the product alone).

A float picture on [0, 1] takes the same arithmetic from its values: for one that came from uint8 (``v / 255`` in
float32), ``x * 255`` gives ``v`` back exactly, so the eager transform on a float picture reproduces the table's
floats.
"""

from __future__ import annotations

import torch

NORMALISATIONS = ("unit", "pixel", "paddle")


def check_normalisation(arithmetic: str) -> None:
    if arithmetic not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {arithmetic!r}")


def pixel_constants(values: tuple[float, ...]) -> tuple[float, ...]:
    """Mean or std on [0, 1] in pixel units as a reference's config writes them: ``255 x v`` rounded to 6
    decimals (``255 * 0.224`` is 57.120000000000005 in float64, the config's literal 57.12)."""
    return tuple(round(255.0 * float(v), 6) for v in values)


def _channels(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)[:, None, None]


def normalised(
    image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], arithmetic: str = "unit"
) -> torch.Tensor:
    """A [C,H,W] float32 picture on [0, 1] normalised by ``mean`` / ``std`` (on [0, 1]) in the named arithmetic
    (see the module notes), as float32."""
    device = image.device
    if arithmetic == "unit":
        return (image - _channels(mean, torch.float32, device)) / _channels(std, torch.float32, device)
    if arithmetic == "pixel":
        pixels = image * 255.0  # exact for v / 255: the uint8 levels again
        mean_px = _channels(pixel_constants(mean), torch.float32, device)
        return (pixels - mean_px) / _channels(pixel_constants(std), torch.float32, device)
    if arithmetic == "paddle":
        scaled = (image * 255.0) * torch.tensor(1.0 / 255.0, dtype=torch.float32, device=device)
        centred = (scaled.double() - _channels(mean, torch.float64, device)).float()
        return (centred.double() / _channels(std, torch.float64, device)).float()
    raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {arithmetic!r}")


def level_table(mean: tuple[float, ...], std: tuple[float, ...], arithmetic: str = "unit") -> torch.Tensor:
    """[C, 256] float32: each channel's 256 uint8 levels normalised as `normalised` does a picture of them."""
    levels = torch.arange(256, dtype=torch.uint8).float() / 255.0
    return normalised(levels.repeat(len(mean), 1)[:, :, None], mean, std, arithmetic)[:, :, 0]


def normalised_pixel(
    value: float, mean: tuple[float, ...], std: tuple[float, ...], arithmetic: str = "unit"
) -> tuple[float, ...]:
    """One pixel of value ``value`` (on [0, 1]) on every channel, normalised as a picture is: the padding's value
    (MMDetection pads the uint8 picture with grey 114 before normalising it)."""
    pixel = torch.full((len(mean), 1, 1), float(value), dtype=torch.float32)
    return tuple(float(v) for v in normalised(pixel, mean, std, arithmetic).flatten())
