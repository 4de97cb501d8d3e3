"""A prediction's `Result` as the bodies the endpoints return: PaddleX's instances, instaseg's own json.

PaddleX crops each instance's mask to its box rounded with Python's ``round`` (``mask[round(y1):round(y2),
round(x1):round(x2)]``) and RLE-encodes the crop, so ``size`` is the box's; the same rule here gives the same
``rleResult`` strings. Crops are read from the full-image RLE without decoding the whole image.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from instaseg.data.masks import mask_to_polygons
from instaseg.inference.postprocess import rle_to_crop
from instaseg.inference.result import Result

JPEG_QUALITY = 90


def rounded_box(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a box rounded as PaddleX rounds it, kept inside the image."""
    h, w = image_size
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
    y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
    return x0, y0, max(x0, x1), max(y0, y1)


def box_crop_rle(rle: dict, box: np.ndarray, image_size: tuple[int, int]) -> tuple[str, list[int]]:
    """The compressed RLE counts and [h, w] of a full-image RLE mask cropped to its rounded box."""
    x0, y0, x1, y1 = rounded_box(box, image_size)
    crop = rle_to_crop(rle, x0, y0, x1 - x0, y1 - y0).astype(np.uint8)
    encoded = mask_utils.encode(np.asfortranarray(crop))
    return encoded["counts"].decode("ascii"), [y1 - y0, x1 - x0]


def paddlex_instances(result: Result) -> list[dict[str, Any]]:
    """PaddleX's ``instances``: bbox, categoryId (0-based class index), categoryName, score, cropped mask."""
    instances = []
    for box, score, label, rle in zip(result.boxes, result.scores, result.labels, result.rles, strict=True):
        counts, size = box_crop_rle(rle, box, result.image_size)
        instances.append(
            {
                "bbox": [float(v) for v in box],
                "categoryId": int(label) - 1,
                "categoryName": result.label_name(label),
                "score": float(score),
                "mask": {"rleResult": counts, "size": size},
            }
        )
    return instances


def polygons(result: Result) -> list[list[list[float]]]:
    """Each instance's outer contours as COCO polygons in image pixels (one list per connected part)."""
    out = []
    for box, rle in zip(result.boxes, result.rles, strict=True):
        x0, y0, x1, y1 = rounded_box(box, result.image_size)
        # one pixel of margin: a mask may reach just past its rounded box
        x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
        x1, y1 = min(x1 + 1, result.image_size[1]), min(y1 + 1, result.image_size[0])
        crop = rle_to_crop(rle, x0, y0, x1 - x0, y1 - y0)
        parts = mask_to_polygons(crop) if crop.size else []
        out.append([[v + (x0 if i % 2 == 0 else y0) for i, v in enumerate(poly)] for poly in parts])
    return out


def overlay_jpeg_base64(result: Result) -> str:
    """The overlay picture (masks, contours, tags) as base64 JPEG, PaddleX's ``result.image``."""
    bgr = np.ascontiguousarray(result.img[..., ::-1])
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cannot encode the overlay as JPEG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def paddlex_result(result: Result, visualize: bool) -> dict[str, Any]:
    return {"instances": paddlex_instances(result), "image": overlay_jpeg_base64(result) if visualize else None}


def native_result(result: Result, with_polygons: bool, visualize: bool) -> dict[str, Any]:
    body = dict(result.json)
    if with_polygons:
        body["polygons"] = polygons(result)
    if visualize:
        body["image"] = overlay_jpeg_base64(result)
    return body
