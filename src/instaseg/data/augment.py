"""Training augmentations of the published recipes beyond resize, jitter and flips.

- `ZoomOutCropResize`: PaddleDetection's RandomExpand (zoom out: the image on a canvas up to ``max_ratio`` times
  larger, filled with the mean pixel), then its RandomCrop (SSD's minimum-IoU crop), then the recipe resize, in one
  step. The zoom-out canvas and the crop window are decided on boxes alone and only the output is drawn, so a 4x
  canvas never exists in memory: every pixel is resampled once, from the source image to the output.
- `MultiScaleResize`: a shorter side drawn per image from a list (mmdetection's RandomChoiceResize,
  PaddleDetection's RandomResize), aspect ratio kept, longer side capped at ``max_size``.
- `BatchMultiScale`: a collate function that stretches a whole batch to one square side drawn per batch
  (PaddleDetection's BatchRandomResize with keep_ratio false).
- `photometric`: the colour changes a recipe names (``jitter``, PaddleDetection's ``distort``, YOLOX's ``hsv``).

Each follows the published operator's sampling; the code is instaseg's own, on tensors and tv_tensors.
"""

from __future__ import annotations

import math
import random
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from instaseg.data.transforms import Sample, resized_size, unwrap_sample, wrap_sample

MEAN_PIXEL = (124, 116, 104)  # ImageNet's mean RGB, PaddleDetection's RandomExpand fill (123.675, 116.28, 103.53)
CROP_IOUS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)  # minimum IoU of the crop with some object (SSD, PaddleDetection)
CROP_SCALE = (0.3, 1.0)  # crop side / image side
CROP_ASPECT = (0.5, 2.0)
CROP_ATTEMPTS = 50


def box_iou(boxes: np.ndarray, window: np.ndarray) -> np.ndarray:
    """IoU of each xyxy box with one xyxy window."""
    lt = np.maximum(boxes[:, :2], window[:2])
    rb = np.minimum(boxes[:, 2:], window[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(window[2:] - window[:2]) - inter
    return inter / np.maximum(area, 1e-10)


def kept_in_window(boxes: np.ndarray, window: np.ndarray) -> np.ndarray:
    """[N] bool: the box's centre lies in the window and something of the box is left inside it."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = ((window[:2] <= centres) & (centres < window[2:])).all(axis=1)
    clipped = np.minimum(boxes[:, 2:], window[2:]) - np.maximum(boxes[:, :2], window[:2])
    return inside & (clipped > 0).all(axis=1)


def min_iou_crop(boxes: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """A crop window (x1, y1, x2, y2) overlapping some box by a minimum IoU drawn from CROP_IOUS, keeping at least
    one box by its centre; None: no crop (drawn as one more choice among the thresholds, or none found)."""
    choices: list[float | None] = [*CROP_IOUS, None]
    random.shuffle(choices)
    for threshold in choices:
        if threshold is None:
            return None
        for _ in range(CROP_ATTEMPTS):
            scale = random.uniform(*CROP_SCALE)
            aspect = random.uniform(max(CROP_ASPECT[0], scale**2), min(CROP_ASPECT[1], scale**-2))
            ch, cw = int(height * scale / math.sqrt(aspect)), int(width * scale * math.sqrt(aspect))
            if ch < 1 or cw < 1:
                continue
            y, x = random.randint(0, height - ch), random.randint(0, width - cw)
            window = np.array([x, y, x + cw, y + ch], dtype=np.float32)
            if box_iou(boxes, window).max() >= threshold and kept_in_window(boxes, window).any():
                return window
    return None


class ZoomOutCropResize:
    """Zoom out (probability ``zoom_out``, canvas ratio uniform in [1, ``max_ratio``]), minimum-IoU crop
    (probability ``crop``), then resize to the recipe size (``keep_ratio``, or stretched to a square)."""

    def __init__(self, min_size: int, max_size: int, keep_ratio: bool, zoom_out: float, max_ratio: float, crop: float):
        self.min_size, self.max_size, self.keep_ratio = int(min_size), int(max_size), bool(keep_ratio)
        self.zoom_out, self.max_ratio, self.crop = float(zoom_out), float(max_ratio), float(crop)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        image, target = unwrap_sample(image, target)
        h, w = image.shape[-2:]
        boxes = target["boxes"].numpy().reshape(-1, 4)
        placed, (ch, cw) = np.array([0, 0, w, h], dtype=np.float32), (h, w)
        if random.random() < self.zoom_out:
            ratio = random.uniform(1.0, self.max_ratio)
            if int(h * ratio) > h and int(w * ratio) > w:  # else left as it is, as PaddleDetection's RandomExpand
                ch, cw = int(h * ratio), int(w * ratio)
                y, x = random.randint(0, ch - h - 1), random.randint(0, cw - w - 1)
                placed = np.array([x, y, x + w, y + h], dtype=np.float32)
        shifted = boxes + np.tile(placed[:2], 2)
        window = min_iou_crop(shifted, ch, cw) if len(boxes) and random.random() < self.crop else None
        if window is None:
            window, keep = np.array([0, 0, cw, ch], dtype=np.float32), np.ones(len(boxes), dtype=bool)
        else:
            keep = kept_in_window(shifted, window)
        return self.draw(image, target, placed, window, torch.from_numpy(keep))

    def out_size(self, window: np.ndarray) -> tuple[int, int]:
        wh, ww = int(window[3] - window[1]), int(window[2] - window[0])
        if not self.keep_ratio:
            return self.max_size, self.max_size
        return resized_size(wh, ww, self.min_size, self.max_size)

    def draw(
        self, image: torch.Tensor, target: dict, placed: np.ndarray, window: np.ndarray, keep: torch.Tensor
    ) -> Sample:
        """The window's pixels at the output size: the image's part of it resampled once, the rest filled."""
        oh, ow = self.out_size(window)
        sy, sx = oh / float(window[3] - window[1]), ow / float(window[2] - window[0])
        # the image's part of the window, in canvas pixels, then in source and in output pixels
        ix1, iy1 = max(placed[0], window[0]), max(placed[1], window[1])
        ix2, iy2 = min(placed[2], window[2]), min(placed[3], window[3])
        src = [int(iy1 - placed[1]), int(iy2 - placed[1]), int(ix1 - placed[0]), int(ix2 - placed[0])]
        dst = [round((iy1 - window[1]) * sy), round((iy2 - window[1]) * sy)]
        dst += [round((ix1 - window[0]) * sx), round((ix2 - window[0]) * sx)]
        dst[1], dst[3] = min(max(dst[1], dst[0] + 1), oh), min(max(dst[3], dst[2] + 1), ow)
        size = [dst[1] - dst[0], dst[3] - dst[2]]
        out = torch.tensor(MEAN_PIXEL, dtype=image.dtype).view(3, 1, 1).expand(3, oh, ow).clone()
        part = image[:, src[0] : src[1], src[2] : src[3]]
        out[:, dst[0] : dst[1], dst[2] : dst[3]] = _resize(part, size, bilinear=True)
        masks = target["masks"][keep]
        out_masks = masks.new_zeros((masks.shape[0], oh, ow))
        if masks.shape[0]:
            m = masks[:, src[0] : src[1], src[2] : src[3]]
            out_masks[:, dst[0] : dst[1], dst[2] : dst[3]] = _resize(m, size, bilinear=False)
        boxes = target["boxes"][keep].clone()
        boxes[:, 0::2] = ((boxes[:, 0::2] + placed[0]).clamp(window[0], window[2]) - window[0]) * sx
        boxes[:, 1::2] = ((boxes[:, 1::2] + placed[1]).clamp(window[1], window[3]) - window[1]) * sy
        return wrap_sample(out, dict(target, boxes=boxes, masks=out_masks, labels=target["labels"][keep]))


def _resize(x: torch.Tensor, size: list[int], bilinear: bool) -> torch.Tensor:
    """[C,H,W] uint8 to ``size``: bilinear for pixels (no antialiasing, as the inference resize), nearest for masks."""
    if list(x.shape[-2:]) == list(size):
        return x
    if bilinear:
        return v2.functional.resize(x, size, antialias=False)
    return F.interpolate(x[None].float(), size=size, mode="nearest")[0].to(x.dtype)


class MultiScaleResize:
    """The shorter side drawn from ``sizes`` for each image, the longer capped at ``max_size``, ratio kept."""

    def __init__(self, sizes: list[int], max_size: int):
        self.sizes, self.max_size = [int(s) for s in sizes], int(max_size)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        image, target = unwrap_sample(image, target)
        h, w = image.shape[-2:]
        side = random.choice(self.sizes)
        oh, ow = resized_size(h, w, side, self.max_size)
        if (oh, ow) == (h, w):
            return wrap_sample(image, target)
        boxes = target["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h])
        masks = _resize(target["masks"], [oh, ow], bilinear=False) if len(target["masks"]) else (
            target["masks"].new_zeros((0, oh, ow)))  # fmt: skip
        return wrap_sample(_resize(image, [oh, ow], bilinear=True), dict(target, boxes=boxes, masks=masks))


class BatchMultiScale:
    """Collate, then stretch every image of the batch (float [3,H,W]), its masks and boxes to one square side drawn
    from ``sizes`` for the batch."""

    def __init__(self, sizes: list[int], collate: Any):
        self.sizes, self.collate = [int(s) for s in sizes], collate

    def __call__(self, batch: list) -> tuple[list[torch.Tensor], list[dict]]:
        images, targets = self.collate(batch)
        side = random.choice(self.sizes)
        out_images, out_targets = [], []
        for image, target in zip(images, targets, strict=True):
            h, w = image.shape[-2:]
            if (h, w) == (side, side):
                out_images.append(image)
                out_targets.append(target)
                continue
            out_images.append(F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)[0])
            masks = target["masks"]
            masks = _resize(masks, [side, side], bilinear=False) if len(masks) else masks.new_zeros((0, side, side))
            boxes = target["boxes"] * torch.tensor([side / w, side / h, side / w, side / h])
            out_targets.append(dict(target, boxes=boxes, masks=masks))
        return out_images, out_targets


class PaddleDistort:
    """PaddleDetection's RandomDistort: brightness, contrast and saturation (PIL's enhancers, factors in [0.5, 1.5])
    and hue (+-18 of PIL's 256 hue steps), in random order, each applied to half of the images."""

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        from PIL import Image, ImageEnhance

        image_t, target = unwrap_sample(image, target)
        pil = Image.fromarray(image_t.permute(1, 2, 0).numpy())
        ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color, None]
        random.shuffle(ops)
        for op in ops:
            if random.random() >= 0.5:
                continue
            if op is None:
                hsv = np.array(pil.convert("HSV"), dtype=np.int16)
                hsv[..., 0] = (hsv[..., 0] + int(round(random.uniform(-18, 18)))) % 256
                channels = [Image.fromarray(np.ascontiguousarray(hsv[..., c].astype(np.uint8))) for c in range(3)]
                pil = Image.merge("HSV", channels).convert("RGB")
            else:
                pil = op(pil).enhance(random.uniform(0.5, 1.5))
        return wrap_sample(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous(), target)


class YoloxHSV:
    """YOLOX's HSV augmentation (mmdetection's YOLOXHSVRandomAug): each of hue (+-5 of OpenCV's 180), saturation and
    value (+-30 of 255) shifted for half of the images."""

    gains = (5, 30, 30)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        image_t, target = unwrap_sample(image, target)
        deltas = [random.uniform(-g, g) * random.randint(0, 1) for g in self.gains]
        hsv = cv2.cvtColor(image_t.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(deltas[0])) % 180
        hsv[..., 1:] = np.clip(hsv[..., 1:] + np.array([int(deltas[1]), int(deltas[2])], dtype=np.int16), 0, 255)
        rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
        return wrap_sample(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), target)


def photometric(style: Any, prob: float) -> Any:
    """The colour transform a recipe's ``train.photometric`` names (None for false), applied to ``prob`` of the
    images."""
    if style is False:
        return None
    if style in (True, "jitter"):
        op: Any = v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)
    elif style == "distort":
        op = PaddleDistort()
    else:
        op = YoloxHSV()
    return v2.RandomApply([op], p=prob) if prob < 1.0 else op
