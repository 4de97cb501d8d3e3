"""Shared by both sides (numpy, cv2 and pycocotools only): the pictures and the training targets."""

from __future__ import annotations

import json
import os

import numpy as np
from pycocotools import mask as mask_utils

DATASET = os.environ.get("TINY_COCO", "/work/shared/datasets/tiny_coco")  # the pictures and their annotations
IMAGES_DIR = os.path.join(DATASET, "images")
# a landscape, a portrait and a crowded picture
IMAGES = ["000000391895.jpg", "000000554625.jpg", "000000060623.jpg"]
MAX_OBJECTS = 8  # per training picture


def pick_images(n: int) -> list[str]:
    return [os.path.join(IMAGES_DIR, f) for f in IMAGES[:n]]


def _coco() -> tuple[dict, dict, list[int]]:
    images, anns, cats = {}, {}, set()
    for split in ("instances_train.json", "instances_val.json"):
        with open(os.path.join(DATASET, "annotations", split)) as f:
            d = json.load(f)
        images.update({i["file_name"]: i for i in d["images"]})
        for a in d["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        cats.update(c["id"] for c in d["categories"])
    return images, anns, sorted(cats)


def load_targets(paths: list[str], out_h: int, out_w: int, sx: float, sy: float) -> list[dict]:
    """Per picture, its non-crowd polygon objects (at most MAX_OBJECTS, largest first) in the resized picture
    (x * sx, y * sy; out_h x out_w pixels): boxes xyxy float32, labels 0..79, polygons (lists of float lists, what
    PaddleDetection's gt_poly holds) and masks uint8 [n, out_h, out_w] rasterised from those same polygons."""
    images, anns, cats = _coco()
    out = []
    for p in paths:
        info = images[os.path.basename(p)]
        objs = [a for a in anns.get(info["id"], []) if not a.get("iscrowd", 0) and isinstance(a["segmentation"], list)
                and a["bbox"][2] > 1 and a["bbox"][3] > 1]
        objs = sorted(objs, key=lambda a: -a["area"])[:MAX_OBJECTS]
        boxes, labels, masks, polys = [], [], [], []
        for a in objs:
            x, y, bw, bh = a["bbox"]
            boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
            labels.append(cats.index(a["category_id"]))
            scaled = []
            for poly in a["segmentation"]:
                q = np.asarray(poly, np.float64).copy()
                q[0::2] *= sx
                q[1::2] *= sy
                scaled.append(q.tolist())
            polys.append(scaled)
            rle = mask_utils.merge(mask_utils.frPyObjects(scaled, out_h, out_w))
            masks.append(mask_utils.decode(rle))
        out.append({
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
            "masks": np.asarray(masks, np.uint8).reshape(-1, out_h, out_w),
            "polys": polys,
        })
    return out
