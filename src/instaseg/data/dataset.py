"""The torch Dataset over a `CocoData`: images and instance targets for torchvision-style detectors.

Item = (image FloatTensor[3, H, W] in [0, 1], target) with target ``boxes`` FloatTensor[N, 4] (xyxy pixels),
``labels`` Int64Tensor[N] (1..K, 0 is background), ``masks`` UInt8Tensor[N, H, W], ``image_id`` int and
``orig_size`` (h, w). Masks are decoded per item, straight into one uint8 array, so images with hundreds of
instances cost N*H*W bytes and no more; transforms resize them in uint8 (nearest).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from instaseg.data.coco import CocoData
from instaseg.data.masks import rle_bbox, segmentation_to_rle
from instaseg.data.transforms import unwrap_sample, wrap_sample
from instaseg.errors import UserError
from instaseg.utils.images import read_image

logger = logging.getLogger(__name__)


def _polygon_area(poly: list[float]) -> float:
    xy = np.asarray(poly[: len(poly) // 2 * 2], dtype=np.float64).reshape(-1, 2)  # pycocotools drops an odd value
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _mask_problem(seg: Any, height: int, width: int) -> str | None:
    """What keeps a segmentation from giving a mask for this image (cheap: polygons are not rasterised)."""
    if isinstance(seg, list):
        return None if any(len(p) >= 6 and _polygon_area(p) > 0 for p in seg) else "empty mask"
    if not isinstance(seg, dict):
        return "empty mask"
    try:
        if [int(v) for v in seg["size"]] != [height, width]:
            return "mask size differs from image"
        return None if float(mask_utils.area(segmentation_to_rle(seg, height, width))) > 0 else "empty mask"
    except (TypeError, ValueError, KeyError):
        return "empty mask"


def unusable_reason(ann: dict, image: dict, known_categories: set[int]) -> str | None:
    """Why an annotation cannot be a training target (``None`` when it can)."""
    if ann.get("iscrowd", 0):
        return "crowd"
    if ann.get("category_id") not in known_categories:
        return "unknown category"
    problem = _mask_problem(ann.get("segmentation"), image["height"], image["width"])
    if problem:
        return problem
    bbox = ann.get("bbox")
    if bbox is not None and (bbox[2] < 1 or bbox[3] < 1):
        return "degenerate"
    return None


class InstanceDataset(Dataset):
    """Images of a `CocoData` with their usable instances; crowd and unusable annotations are left out.

    ``transforms`` take and return ``(image, target)`` with tv_tensors (see `instaseg.data.transforms`);
    images reach them as uint8 so resizing and colour jitter stay cheap, and leave as float in [0, 1].
    ``train`` marks a training dataset (its skipped annotations are reported as left out of training).
    """

    def __init__(self, data: CocoData, transforms: Callable | None = None, train: bool = True):
        self.data = data
        self.transforms = transforms
        self.train = train
        self._category_ids = data.category_ids  # label - 1 indexes it; kept: a per-prediction lookup
        self._label_of = {cid: i + 1 for i, cid in enumerate(self._category_ids)}
        by_image = data.annotations_by_image()
        self.skipped: Counter[str] = Counter()
        self._annotations: list[list[dict]] = []
        known = set(self._label_of)
        for image in data.images:
            usable = []
            for ann in by_image.get(image["id"], []):
                reason = unusable_reason(ann, image, known)
                if reason:
                    self.skipped[reason] += 1
                else:
                    usable.append(ann)
            self._annotations.append(usable)
        if self.skipped:
            detail = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            purpose = "training targets" if train else "targets"
            where = f"{data.source}: " if data.source else ""
            logger.warning("%sskipped %d annotations from %s: %s", where, self.skipped.total(), purpose, detail)

    def __len__(self) -> int:
        return len(self.data.images)

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def category_ids(self) -> list[int]:
        return list(self._category_ids)

    def label_to_category_id(self, label: int) -> int:
        """Contiguous label (1..K) -> the dataset's category id."""
        if not 1 <= int(label) <= len(self._category_ids):
            raise ValueError(f"label {label} outside 1..{len(self._category_ids)}")
        return self._category_ids[int(label) - 1]

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Image (uint8 [3, H, W]) and target at original size, wrapped as tv_tensors, before transforms."""
        record = self.data.images[index]
        path = self.data.image_path(record)
        pixels = read_image(path)
        h, w = pixels.shape[:2]
        if (h, w) != (record["height"], record["width"]):
            raise UserError(
                f"image is {w}x{h} but its record says {record['width']}x{record['height']}",
                path,
                f"image id {record['id']}",
            )
        anns = self._annotations[index]
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        boxes = np.zeros((len(anns), 4), dtype=np.float32)
        for i, ann in enumerate(anns):
            rle = segmentation_to_rle(ann["segmentation"], h, w)
            masks[i] = mask_utils.decode(rle)
            x, y, bw, bh = ann["bbox"] if ann.get("bbox") is not None else rle_bbox(rle)
            boxes[i] = (x, y, x + bw, y + bh)
        np.clip(boxes, 0, [w, h, w, h], out=boxes)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": int(record["id"]),
            "orig_size": (int(h), int(w)),
        }
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return wrap_sample(image, target)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        image, target = unwrap_sample(image, target)
        target["boxes"] = target["boxes"].float().reshape(-1, 4)
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        return image, target


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches stay lists: images differ in size and targets in instance count."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
