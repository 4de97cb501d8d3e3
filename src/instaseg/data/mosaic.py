"""Mosaic and MixUp (YOLOX / RTMDet style), and a two-stage pipeline that drops them for the last epochs.

Both draw their partner images from a small cache of recently seen samples, as RTMDet's cached Mosaic and MixUp
do: a transform needs no access to the dataset, and in a DataLoader worker the cache holds other images of the
same dataset. The strong stage is Mosaic (four images on a 2S x 2S canvas) -> large-scale jitter resize and an
S x S crop -> colour jitter -> flip -> boxes recomputed from the cropped masks -> MixUp (0.5 / 0.5 blend with a
cached strong-stage result); the light stage is the ordinary recipe pipeline (`instaseg.data.pipeline`).
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from instaseg.data.augment import photometric
from instaseg.data.transforms import ResizeToRecipe, Sample, boxes_from_masks, wrap_sample

PAD_VALUE = 114  # the grey RTMDet pads its canvases with


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor)


def _fit(image: torch.Tensor, target: dict, size: int) -> Sample:
    """Resize (keeping the aspect ratio) so the image fits in size x size."""
    h, w = image.shape[-2:]
    scale = min(size / h, size / w)
    new = [max(1, round(h * scale)), max(1, round(w * scale))]
    if new == [h, w]:
        return image, target
    masks = (
        F.resize(_plain(target["masks"]), new, interpolation=v2.InterpolationMode.NEAREST)
        if len(target["labels"])
        else _plain(target["masks"]).new_zeros((0, *new))
    )
    boxes = _plain(target["boxes"]) * torch.tensor([new[1] / w, new[0] / h] * 2)
    return F.resize(_plain(image), new, antialias=True), dict(target, boxes=boxes, masks=masks)


class _Cache:
    def __init__(self, size: int):
        self.size, self.items = size, []

    def add(self, sample: Sample) -> None:
        self.items.append(sample)
        if len(self.items) > self.size:
            self.items.pop(0)

    def pick(self) -> Sample:
        return random.choice(self.items)


class Mosaic:
    """Four images (this one and three cached ones), each fitted to S x S, around a random centre of a
    2S x 2S canvas; boxes are shifted and clipped, masks placed with their image."""

    def __init__(self, size: int, cache_size: int = 20):
        self.size, self.cache = size, _Cache(cache_size)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        s = self.size
        sample = _fit(_plain(image), target, s)
        self.cache.add(sample)
        parts = [sample] + [self.cache.pick() for _ in range(3)]
        cx, cy = int(random.uniform(0.5 * s, 1.5 * s)), int(random.uniform(0.5 * s, 1.5 * s))
        canvas = torch.full((image.shape[0], 2 * s, 2 * s), PAD_VALUE, dtype=image.dtype)
        masks, boxes, labels = [], [], []
        for corner, (img, tgt) in enumerate(parts):
            h, w = img.shape[-2:]
            x1, y1 = (max(cx - w, 0), max(cy - h, 0)) if corner in (0, 2) else (cx, max(cy - h, 0))
            if corner >= 2:
                y1 = cy
            x2 = cx if corner in (0, 2) else min(cx + w, 2 * s)
            y2 = cy if corner < 2 else min(cy + h, 2 * s)
            # part of the image that lands on the canvas: the side facing the centre
            ix1 = w - (x2 - x1) if corner in (0, 2) else 0
            iy1 = h - (y2 - y1) if corner < 2 else 0
            canvas[:, y1:y2, x1:x2] = img[:, iy1 : iy1 + y2 - y1, ix1 : ix1 + x2 - x1]
            m = _plain(tgt["masks"])
            placed = m.new_zeros((m.shape[0], 2 * s, 2 * s))
            placed[:, y1:y2, x1:x2] = m[:, iy1 : iy1 + y2 - y1, ix1 : ix1 + x2 - x1]
            shift = torch.tensor([x1 - ix1, y1 - iy1] * 2, dtype=torch.float32)
            b = (_plain(tgt["boxes"]).float() + shift).clamp(min=0, max=2 * s)
            masks.append(placed)
            boxes.append(b.reshape(-1, 4))
            labels.append(tgt["labels"])
        out = dict(target, boxes=torch.cat(boxes), masks=torch.cat(masks), labels=torch.cat(labels))
        return wrap_sample(canvas, out)


class RecomputeBoxes:
    """Boxes from the masks after a crop: a cut object's box shrinks to what is left of it."""

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        return wrap_sample(_plain(image), dict(target, boxes=boxes_from_masks(target["masks"])))


class MixUp:
    """With probability ``p``, blend 0.5 / 0.5 with a cached earlier result (same size after the strong stage's
    crop; otherwise placed at the top-left, cropped or padded) and keep the instances of both."""

    def __init__(self, p: float = 0.5, cache_size: int = 10):
        self.p, self.cache = float(p), _Cache(cache_size)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        image = _plain(image)
        current = (image, target)
        use = len(self.cache.items) > 0 and random.random() < self.p
        partner = self.cache.pick() if use else None
        self.cache.add(current)
        if partner is None:
            return wrap_sample(image, target)
        p_img, p_tgt = partner
        h, w = image.shape[-2:]
        other = torch.full_like(image, PAD_VALUE)
        ph, pw = min(h, p_img.shape[-2]), min(w, p_img.shape[-1])
        other[:, :ph, :pw] = p_img[:, :ph, :pw]
        p_masks = _plain(p_tgt["masks"]).new_zeros((len(p_tgt["labels"]), h, w))
        p_masks[:, :ph, :pw] = _plain(p_tgt["masks"])[:, :ph, :pw]
        mixed = ((image.float() + other.float()) * 0.5).round().to(image.dtype)
        masks = torch.cat([_plain(target["masks"]), p_masks])
        labels = torch.cat([target["labels"], p_tgt["labels"]])
        return wrap_sample(mixed, dict(target, masks=masks, labels=labels, boxes=boxes_from_masks(masks)))


class StagedPipeline:
    """The strong pipeline until `set_light(True)`, then the light one. The stage lives in a shared-memory
    tensor so DataLoader worker processes follow the main process's switch."""

    def __init__(self, strong: Any, light: Any):
        self.strong, self.light = strong, light
        self._light = torch.zeros(1, dtype=torch.uint8).share_memory_()

    def set_light(self, light: bool) -> None:
        self._light.fill_(int(light))

    @property
    def is_light(self) -> bool:
        return bool(self._light.item())

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        return (self.light if self.is_light else self.strong)(image, target)


def build_mosaic_pipeline(recipe_input: dict, cfg: dict, light: Any = None) -> StagedPipeline:
    """RTMDet's two-stage training pipeline for a recipe with ``train.mosaic`` and/or ``train.mixup``; ``light``:
    the pipeline of the last epochs (default: resize with the recipe's scale jitter, flip)."""
    size = int(recipe_input["max_size"])
    lo, hi = cfg.get("scale_jitter") or (1.0, 1.0)
    steps: list[Any] = []
    if cfg.get("mosaic"):
        # the 2S canvas is first brought to S, so the jitter range doubles: S x [lo, hi] relative to one image
        steps += [Mosaic(size), ResizeToRecipe(size, size, (2 * lo, 2 * hi))]
    else:
        steps.append(ResizeToRecipe(int(recipe_input["min_size"]), size, cfg.get("scale_jitter")))
    colour = photometric(cfg.get("photometric", False), float(cfg.get("photometric_prob", 0.8)))
    steps += [colour] if colour is not None else []
    if cfg.get("hflip", True):
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(RecomputeBoxes())
    if cfg.get("mixup"):
        steps.append(MixUp(float(cfg.get("mixup_prob", 0.5))))
    steps.append(v2.SanitizeBoundingBoxes(min_size=1))
    if light is None:
        light = v2.Compose([ResizeToRecipe(int(recipe_input["min_size"]), size, cfg.get("scale_jitter")),
                            v2.RandomHorizontalFlip(p=0.5), v2.SanitizeBoundingBoxes(min_size=1)])  # fmt: skip
    return StagedPipeline(v2.Compose(steps), light)
