"""Tiles: a plan of square windows over a large image, and a training dataset that serves tiles, not images.

The plan (`tile_windows`) is shared by training and prediction, so a model sees at prediction the windows it
was trained on. Windows step by ``tile * (1 - overlap)``; the last row and column are shifted back inside the
image, so every window is full-sized when the image is at least a tile, and one window is the image otherwise.

Training on tiles (`TiledInstanceDataset`): every window holding an object, plus a seeded share of the empty
ones (background still has to be learned). An object cut by a window's border is kept when at least
MIN_VISIBLE_SHARE of its mask lies inside (the part inside is its target, as a model will see it at prediction
near a tile border); less than that is dropped, since a sliver is not recognisable. Masks are decoded one object
at a time and cropped at once, so a tile costs its own pixels, not the image's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from instaseg.data.dataset import InstanceDataset
from instaseg.data.masks import segmentation_to_rle
from instaseg.data.transforms import wrap_sample
from instaseg.utils.images import read_image

MIN_VISIBLE_SHARE = 0.3  # an object cut by the tile border stays a target when this share of it is inside


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # the last window ends at the border
    return sorted(set(starts))


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) covering an image of ``height`` x ``width`` with square ``tile`` windows."""
    step = max(1, int(round(tile * (1.0 - overlap))))
    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in _starts(height, tile, step)
        for x0 in _starts(width, tile, step)
    ]


def _overlaps(bbox: list[float], window: tuple[int, int, int, int]) -> bool:
    x, y, w, h = bbox
    return x < window[2] and x + w > window[0] and y < window[3] and y + h > window[1]


class TiledInstanceDataset(InstanceDataset):
    """The training images of a `CocoData` cut into tiles (see the module notes); an item is one tile."""

    def __init__(self, data, transforms=None, tile: int = 512, overlap: float = 0.2, empty_fraction: float = 0.1,
                 seed: int = 0):  # fmt: skip
        super().__init__(data, transforms, train=True)
        rng = np.random.default_rng(seed)
        self.windows: list[tuple[int, tuple[int, int, int, int]]] = []
        for index, record in enumerate(data.images):
            anns = self._annotations[index]
            for window in tile_windows(int(record["height"]), int(record["width"]), tile, overlap):
                busy = any(a.get("bbox") is not None and _overlaps(a["bbox"], window) for a in anns)
                if busy or rng.random() < empty_fraction:
                    self.windows.append((index, window))

    def __len__(self) -> int:
        return len(self.windows)

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_index, (x0, y0, x1, y1) = self.windows[index]
        record = self.data.images[image_index]
        pixels = read_image(self.data.image_path(record))
        h, w = pixels.shape[:2]
        masks, labels = [], []
        for ann in self._annotations[image_index]:
            if ann.get("bbox") is not None and not _overlaps(ann["bbox"], (x0, y0, x1, y1)):
                continue
            full = mask_utils.decode(segmentation_to_rle(ann["segmentation"], h, w))
            crop = np.ascontiguousarray(full[y0:y1, x0:x1])
            inside, total = int(crop.sum()), int(full.sum())
            if inside and inside >= MIN_VISIBLE_SHARE * total:
                masks.append(crop)
                labels.append(self._label_of[ann["category_id"]])
        stack = np.stack(masks) if masks else np.zeros((0, y1 - y0, x1 - x0), dtype=np.uint8)
        target = {
            "boxes": torch.from_numpy(_mask_boxes(stack)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(stack),
            "image_id": int(record["id"]),
            "orig_size": (int(y1 - y0), int(x1 - x0)),
        }
        tile_pixels = np.ascontiguousarray(pixels[y0:y1, x0:x1].transpose(2, 0, 1))
        return wrap_sample(torch.from_numpy(tile_pixels), target)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """[N,4] xyxy boxes of [N,H,W] masks (the tight box of what is inside the tile)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes
