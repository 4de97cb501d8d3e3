"""Shared by both sides (numpy, cv2 and pycocotools only): configs, the pictures, the training targets and the
deterministic stand-in for the random sampling points of the matcher and the mask losses."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_utils

_RCNN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "paddle_rcnn_full")
sys.path.insert(0, _RCNN)
from rcnn_common import IMAGES_DIR, _coco, pick_images  # noqa: E402,F401  (the same pictures as the R-CNN runs)

# PaddleDetection config per model; their model sections equal PaddleX's
# paddlex/repo_apis/PaddleDetection_api/configs/{Mask-RT-DETR-S..H, PP-YOLOE_seg-S}.yaml
CONFIGS = {
    **{f"mask_rtdetr_{s}": f"configs/mask_rtdetr/mask_rtdetr_hgnetv2_{s}_6x_coco.yml" for s in "smlxh"},
    "ppyoloe_seg_s": "configs/ppyoloe_seg/ppyoloe_seg_s_80e_coco.yml",
}
MAX_OBJECTS = 8  # per training picture: keeps the reference's CPU loss forward short


def load_targets(paths: list[str], out_h: int, out_w: int) -> list[dict]:
    """Per picture, its non-crowd objects (at most MAX_OBJECTS, largest first) in a picture stretched to
    out_h x out_w: boxes xyxy pixels float32, labels 0..79 (sorted category ids), masks uint8 [n,out_h,out_w]
    (nearest resize of the full-size rasterised polygons)."""
    images, anns, cats = _coco()
    out = []
    for p in paths:
        info = images[os.path.basename(p)]
        h, w = info["height"], info["width"]
        objs = [a for a in anns.get(info["id"], [])
                if not a.get("iscrowd", 0) and a["bbox"][2] > 1 and a["bbox"][3] > 1]
        objs = sorted(objs, key=lambda a: -a["area"])[:MAX_OBJECTS]
        sx, sy = out_w / w, out_h / h
        boxes, labels, masks = [], [], []
        for a in objs:
            x, y, bw, bh = a["bbox"]
            boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
            labels.append(cats.index(a["category_id"]))
            seg = a["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
            m = mask_utils.decode(rle)
            masks.append(cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_NEAREST))
        out.append({
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
            "masks": np.asarray(masks, np.uint8).reshape(-1, out_h, out_w),
        })
    return out


def det_rand_np(shape: list[int]) -> np.ndarray:
    """Uniform-looking values in [0, 1) that depend only on a point's index along the second-to-last axis and
    the coordinate (last axis), broadcast over the leading axes: the d-dimensional R-sequence (Roberts), a
    low-discrepancy sequence. Both sides draw their sampling points and box noise from it, so each mask is
    sampled at the same points, and each denoising box is noised the same, whatever the call order."""
    shape = [int(s) for s in shape]
    if len(shape) == 1:
        shape = [shape[0], 1]
        squeeze = True
    else:
        squeeze = False
    n, d = shape[-2], shape[-1]
    g = 2.0
    for _ in range(60):  # the root of x^(d+1) = x + 1
        g = (1 + g) ** (1.0 / (d + 1))
    alpha = g ** -np.arange(1, d + 1, dtype=np.float64)
    vals = np.mod(0.5 + np.arange(1, n + 1, dtype=np.float64)[:, None] * alpha[None], 1.0).astype(np.float32)
    out = np.broadcast_to(vals, shape).copy()
    return out[:, 0] if squeeze else out
