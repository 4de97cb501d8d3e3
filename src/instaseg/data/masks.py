"""Mask encodings: COCO polygons and RLE <-> binary masks, via pycocotools."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Any COCO segmentation (polygon list, uncompressed RLE, compressed RLE) -> compressed RLE."""
    if isinstance(segmentation, list):
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return rle
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> HxW uint8 mask of 0/1."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width))


def mask_to_rle(mask: np.ndarray) -> dict:
    """HxW binary mask -> compressed RLE with a json-ready string ``counts``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_json(rle: dict) -> dict:
    """Compressed RLE with bytes counts -> json-ready copy."""
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_to_polygons(mask: np.ndarray, min_points: int = 3, holes: bool = False) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons (one list of x,y pairs per connected part).

    Coordinates are pixel-corner based like COCO's: a one-pixel square at (x, y) spans [x, x+1].
    Holes are not represented (polygons cannot carry them); use RLE where holes matter.
    ``holes=True`` adds the holes' contours as further lists, only for writers that join all lists into one
    ring filled even-odd (YOLO-seg export): COCO would fill them in.
    """
    mode = cv2.RETR_CCOMP if holes else cv2.RETR_EXTERNAL
    contours, _ = cv2.findContours(mask.astype(np.uint8), mode, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) < min_points:
            continue
        pts = c.reshape(-1, 2).astype(np.float64) + 0.5  # pixel centres -> COCO's continuous frame
        polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys


def rle_area(rle: dict) -> float:
    return float(mask_utils.area(rle))


def rle_bbox(rle: dict) -> list[float]:
    """[x, y, w, h] of a compressed RLE."""
    return [float(v) for v in mask_utils.toBbox(rle)]
