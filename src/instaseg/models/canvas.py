"""torchvision's `GeneralizedRCNNTransform` that pads onto a canvas: at least a ``max_size`` square, filled with a
chosen pixel value, as MMDetection's RTMDet pipeline pads every picture to 640 x 640 with grey 114; that can
size a resized picture as MMDetection does, each side rounded half up where torchvision floors; and that can resize
the picture as uint8 by OpenCV before normalising it, as MMDetection and PaddleDetection do (``resize_order``); and
that can normalise in a reference's float32 arithmetic (``normalisation``, `instaseg.utils.normalisation`).

`instaseg.models.detector.resize_transform` builds it when an architecture asks for such padding; the shared
pre-processing (`instaseg.inference.preprocess`) pads the same way by the `InputSpec` read from it
(`instaseg.models.padding` holds the arithmetic both use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from instaseg.models.padding import filled_batch, normalised_fill, padded_frame
from instaseg.utils.normalisation import check_normalisation, normalised
from instaseg.utils.resize_rule import (
    FLOAT_ORDERS,
    SIZE_ROUNDINGS,
    check_resize_order,
    opencv_resized,
    opencv_resized_float,
    resized_size,
    uint8_picture,
)


class CanvasTransform(GeneralizedRCNNTransform):
    """Resize and normalise as `GeneralizedRCNNTransform`, the resized sides made integers by ``size_rounding``
    ("floor": torchvision's own; "round": half up), in the order ``resize_order`` names ("float": torchvision's;
    ``float_opencv_bilinear``: normalised, then resized in float by OpenCV; a ``uint8_*`` one: the picture on the
    uint8 grid resized by OpenCV, then normalised; targets are resized as
    torchvision does either way); pad each batch to ``InputSpec.padded_frame`` of its largest image with
    ``pad_value`` (a pixel on [0, 1] before normalisation; None: zero after it). ``normalisation``: the float32
    arithmetic of the normalisation, which the padding's value follows too."""

    def __init__(
        self,
        min_size: int,
        max_size: int,
        mean: list[float],
        std: list[float],
        pad_to_square: bool,
        pad_value: float | None,
        size_rounding: str = "floor",
        resize_order: str = "float",
        normalisation: str = "unit",
        size_divisible: int = 32,
    ):
        super().__init__(min_size, max_size, mean, std, size_divisible=size_divisible)
        if size_rounding not in SIZE_ROUNDINGS:
            raise ValueError(f"size_rounding must be one of {SIZE_ROUNDINGS}, got {size_rounding!r}")
        check_resize_order(resize_order)
        check_normalisation(normalisation)
        self.pad_to_square, self.pad_value, self.size_rounding = bool(pad_to_square), pad_value, size_rounding
        self.resize_order, self.normalisation = resize_order, normalisation

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        # the uint8 order normalises after resizing (`resize`), on the resized picture's grey levels
        return self.normalised(image) if self.resize_order in FLOAT_ORDERS else image

    def normalised(self, image: torch.Tensor) -> torch.Tensor:
        """The picture normalised in the ``normalisation`` arithmetic ("unit": torchvision's own)."""
        if self.normalisation == "unit":
            return super().normalize(image)
        return normalised(image, tuple(self.image_mean), tuple(self.image_std), self.normalisation)

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        """torchvision's resize, at the size ``size_rounding`` gives (the same bilinear call: with an output size
        given, interpolate maps pixels by input over output size, as with its recomputed scale factor); with
        ``float_opencv_bilinear`` the normalised picture by OpenCV's bilinear call instead; or the uint8 order's
        (`resize_first`)."""
        if self.resize_order not in FLOAT_ORDERS:
            return self.resize_first(image, target)
        opencv = self.resize_order == "float_opencv_bilinear"
        keeps_size = self.training and self._skip_resize
        if not opencv and (self.size_rounding == "floor" or self.fixed_size is not None or keeps_size):
            return super().resize(image, target)
        h, w = (int(v) for v in image.shape[-2:])
        size = self.rule_size(h, w)
        if size == (h, w):
            return image, target
        if opencv:
            resized = opencv_resized_float(image, size)
        else:
            resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        return resized, self.resized_target(target, (h, w), size)

    def resize_first(self, image: torch.Tensor, target: dict | None) -> tuple[torch.Tensor, dict | None]:
        """The uint8 order: ``image`` (on [0, 1], not yet normalised) rounded to its grey levels, resized by OpenCV
        to the size the rule gives, then normalised; the target's masks (nearest) and boxes resized as torchvision
        resizes them. A picture already at that size (in training: whenever the data pipeline resized it) is
        normalised as it is, not rounded: nothing is resampled."""
        h, w = (int(v) for v in image.shape[-2:])
        size = self.rule_size(h, w)
        if size == (h, w):
            return self.normalised(image), target
        picture = opencv_resized(uint8_picture(image), size, self.resize_order)
        resized = torch.from_numpy(picture).to(image.device).permute(2, 0, 1).to(image.dtype) / 255.0
        return self.normalised(resized), self.resized_target(target, (h, w), size)

    def rule_size(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) the resize rule gives a picture of (h, w): its own in training where the data pipeline already
        resized it; else by ``min_size`` (in training a random choice of them), ``max_size``, ``fixed_size`` and
        ``size_rounding``."""
        if self.training and self._skip_resize:
            return h, w
        min_size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        return resized_size(h, w, min_size, self.max_size, self.fixed_size is None, self.size_rounding)

    @staticmethod
    def resized_target(target: dict | None, old: tuple[int, int], size: tuple[int, int]) -> dict | None:
        """The target's masks (nearest) and boxes of a picture resized from ``old`` to ``size`` (h, w), as
        torchvision's resize resizes them."""
        if target is None:
            return None
        if "masks" in target:
            target["masks"] = F.interpolate(target["masks"][:, None].float(), size=size)[:, 0].byte()
        target["boxes"] = resize_boxes(target["boxes"], list(old), list(size))
        return target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        square = int(self.max_size) if self.pad_to_square else None
        frames = [padded_frame(int(img.shape[-2]), int(img.shape[-1]), size_divisible, square) for img in images]
        height, width = max(f[0] for f in frames), max(f[1] for f in frames)
        fill = normalised_fill(tuple(self.image_mean), tuple(self.image_std), self.pad_value, self.normalisation)
        batch = filled_batch(fill, len(images), height, width, images[0].device).to(images[0].dtype)
        for i, img in enumerate(images):
            batch[i, :, : img.shape[-2], : img.shape[-1]] = img
        return batch
