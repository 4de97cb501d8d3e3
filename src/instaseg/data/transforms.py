"""Transforms on (image, target) samples, built on torchvision.transforms.v2 and tv_tensors.

A sample is ``(image, target)``: ``image`` a ``tv_tensors.Image`` [3, H, W] (uint8 or float), ``target`` a dict
with ``boxes`` (``tv_tensors.BoundingBoxes`` XYXY), ``masks`` (``tv_tensors.Mask`` [N, H, W] uint8) and ``labels``
(a plain int64 tensor). v2 transforms move boxes and masks together with the image, and
``SanitizeBoundingBoxes`` drops an instance's box, mask and label together, so they never fall out of step.

Every pipeline resizes to the recipe size with torchvision's detection rule (`resize_scale`) or, for recipes with
``input.resize: stretch``, to a square; the pipelines themselves are put together in `instaseg.data.pipeline`.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from instaseg.errors import UserError

# the resize arithmetic the models' input spec shares; training sizes are rounded half up, as MMDetection's and
# PaddleDetection's pipelines round them (torchvision's training floors: at most a pixel apart)
from instaseg.utils.resize_rule import resize_scale, resized_size

Sample = tuple[torch.Tensor, dict[str, Any]]


def wrap_sample(image: torch.Tensor, target: dict[str, Any]) -> Sample:
    """Tag plain tensors as tv_tensors so v2 transforms know which is the image, the boxes and the masks."""
    h, w = image.shape[-2:]
    target = dict(target)
    target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    target["masks"] = tv_tensors.Mask(target["masks"])
    return tv_tensors.Image(image), target


def unwrap_sample(image: torch.Tensor, target: dict[str, Any]) -> Sample:
    """Plain tensors again: models and collate need no tv_tensor metadata."""
    target = dict(target)
    for key in ("boxes", "masks", "labels"):
        if isinstance(target.get(key), torch.Tensor):
            target[key] = target[key].as_subclass(torch.Tensor)
    return image.as_subclass(torch.Tensor), target


class ResizeToRecipe(v2.Transform):
    """Resize to the recipe size (`resize_scale`, or a square with ``keep_ratio=False``); with ``scale_range`` also
    jitter the scale (train only).

    A jittered image cannot simply be left larger or smaller: the model would resize it back to the recipe
    size and undo the jitter. So the jittered image is cropped (zoom in) or padded (zoom out) to the
    un-jittered output size, as large-scale-jitter training does, and the model keeps it as it is.
    """

    def __init__(
        self, min_size: int, max_size: int, scale_range: tuple[float, float] | None = None, keep_ratio: bool = True
    ):
        super().__init__()
        if min_size <= 0 or max_size <= 0:
            raise UserError(f"input sizes must be positive, got min_size={min_size}, max_size={max_size}")
        if scale_range and not (len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1]):
            raise UserError(f"train.scale_jitter must be [low, high] with 0 < low <= high, got {scale_range}")
        self.min_size, self.max_size = min_size, max_size
        self.scale_range = tuple(scale_range) if scale_range else None
        self.keep_ratio = bool(keep_ratio)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        canvas = resized_size(h, w, self.min_size, self.max_size, self.keep_ratio)
        if not self.scale_range:
            return {"size": list(canvas), "canvas": canvas, "offset": (0, 0), "unchanged": canvas == (h, w)}
        factor = random.uniform(*self.scale_range)
        if self.keep_ratio:
            scale = resize_scale(h, w, self.min_size, self.max_size) * factor
            size = [max(1, round(h * scale)), max(1, round(w * scale))]
        else:
            size = [max(1, round(c * factor)) for c in canvas]
        # random placement of the crop window (zoom in) or of the image on the padded canvas (zoom out)
        offset = tuple(random.randint(0, abs(s - c)) for s, c in zip(size, canvas, strict=True))
        return {"size": size, "canvas": canvas, "offset": offset, "unchanged": False}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["unchanged"]:  # already at the recipe size (the synthetic data at its default size)
            return inpt
        # plain bilinear, no antialiasing: the resampling torchvision's GeneralizedRCNNTransform (and so the
        # predictor) applies at inference, so trained and served images look alike
        out = self._call_kernel(F.resize, inpt, size=params["size"], antialias=False)
        (h, w), (ch, cw), (dy, dx) = params["size"], params["canvas"], params["offset"]
        if (h, w) == (ch, cw):
            return out
        top, left = (dy if h > ch else 0), (dx if w > cw else 0)
        out = self._call_kernel(F.crop, out, top=top, left=left, height=min(h, ch), width=min(w, cw))
        pad_top, pad_left = (dy if h < ch else 0), (dx if w < cw else 0)
        pad_bottom, pad_right = max(ch - h, 0) - pad_top, max(cw - w, 0) - pad_left
        if pad_top or pad_left or pad_bottom or pad_right:
            out = self._call_kernel(F.pad, out, padding=[pad_left, pad_top, pad_right, pad_bottom], fill=0)
        return out


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes enclosing each mask, in COCO's pixel-corner convention (a one-pixel mask is 1x1 wide).

    An empty mask gets the empty box [0, 0, 0, 0], which `SanitizeBoundingBoxes` then removes.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    masks = masks.as_subclass(torch.Tensor).bool()
    boxes = masks_to_boxes(masks).float()
    boxes[:, 2:] += 1  # masks_to_boxes gives the last pixel's index; a box ends after that pixel
    boxes[~masks.flatten(1).any(dim=1)] = 0
    return boxes


class CopyPaste:
    """Simple copy-paste: paste some instances of the previous training image over this one.

    The donor is the previous sample this pipeline saw (in a DataLoader worker: another image of the same
    dataset), kept before its own paste so pasted instances never pile up. Pasted pixels occlude what lies
    beneath: covered parts are cut from the existing masks, boxes of cut instances are recomputed from their
    masks, and instances left with less than ``min_visible`` of their area (or under 4 pixels) are dropped.
    Place it after the resize, so donor and image are both at the recipe scale.
    """

    def __init__(self, p: float = 0.5, min_visible: float = 0.2):
        self.p, self.min_visible = p, min_visible
        self._donor: Sample | None = None

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        donor, self._donor = self._donor, (image, target)
        if donor is None or len(donor[1]["labels"]) == 0 or random.random() >= self.p:
            return image, target
        return self._paste(image, target, *donor)

    def _paste(self, image: torch.Tensor, target: dict, d_image: torch.Tensor, d_target: dict) -> Sample:
        h, w = image.shape[-2:]
        dh, dw = d_image.shape[-2:]
        scale = min(h / dh, w / dw) * random.uniform(0.5, 1.0)  # the donor fits inside the image
        size = [max(1, round(dh * scale)), max(1, round(dw * scale))]
        keep = torch.rand(len(d_target["labels"])) < 0.5
        if not keep.any():
            keep[random.randrange(len(keep))] = True
        top, left = random.randint(0, h - size[0]), random.randint(0, w - size[1])
        pasted = torch.zeros((int(keep.sum()), h, w), dtype=torch.uint8)
        pasted[:, top : top + size[0], left : left + size[1]] = F.resize(
            d_target["masks"].as_subclass(torch.Tensor)[keep], size, interpolation=v2.InterpolationMode.NEAREST
        )
        visible = pasted.sum(dim=(1, 2)) >= 4
        pasted, labels = pasted[visible], d_target["labels"][keep][visible]
        if len(labels) == 0:
            return image, target
        d_pixels = torch.zeros_like(image.as_subclass(torch.Tensor))
        d_pixels[:, top : top + size[0], left : left + size[1]] = F.resize(
            d_image.as_subclass(torch.Tensor), size, antialias=True
        )
        cover = pasted.bool().any(dim=0)
        out = torch.where(cover, d_pixels, image.as_subclass(torch.Tensor))
        masks, boxes, old_labels = self._occlude(target, cover)
        masks = torch.cat([masks, pasted])
        boxes = torch.cat([boxes, boxes_from_masks(pasted)])
        new_target = dict(target, labels=torch.cat([old_labels, labels]))
        return wrap_sample(out, dict(new_target, boxes=boxes, masks=masks))

    def _occlude(self, target: dict, cover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks = target["masks"].as_subclass(torch.Tensor)
        boxes = target["boxes"].as_subclass(torch.Tensor).clone()
        before = masks.sum(dim=(1, 2))
        masks = masks * (~cover).to(masks.dtype)
        after = masks.sum(dim=(1, 2))
        # instances that had no mask pixels to begin with (tiny, vanished in resize) keep their box untouched
        keep = (before == 0) | ((after >= 4) & (after >= self.min_visible * before))
        changed = (after < before) & keep
        if changed.any():
            boxes[changed] = boxes_from_masks(masks[changed])
        return masks[keep], boxes[keep], target["labels"][keep]
