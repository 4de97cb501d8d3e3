"""One image's predictions: json, COCO results, masks and an overlay picture, each made when asked for."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from instaseg.utils.images import read_image
from instaseg.utils.io import atomic_write_bytes, atomic_write_json


class Result:
    """Instances found in one image (or video frame), in original image pixels.

    ``boxes`` [N,4] xyxy, ``scores`` [N], ``labels`` [N] (1..K, the model's labels; ``cls_id`` = label - 1
    indexes ``class_names``), ``rles`` N COCO compressed RLEs with string counts. Full-size masks are never held:
    ``.masks`` decodes them on demand. The overlay needs the image: arrays and video frames are kept with the
    result, files are read again when ``.img`` is first asked for (so a long stream of results stays small).
    """

    def __init__(
        self,
        *,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        rles: list[dict],
        image_size: tuple[int, int],
        class_names: list[str],
        category_ids: list[int] | None = None,
        input_path: str | Path | None = None,
        frame_index: int | None = None,
        name: str = "image",
        image: np.ndarray | None = None,
    ):
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.rles = list(rles)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.input_path = str(input_path) if input_path is not None else None
        self.frame_index = frame_index
        self.name = name
        self._image = image

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        where = self.input_path or self.name
        frame = f", frame {self.frame_index}" if self.frame_index is not None else ""
        return f"Result({where}{frame}: {len(self)} instances, {self.image_size[1]}x{self.image_size[0]})"

    def label_name(self, label: int) -> str:
        index = int(label) - 1
        return self.class_names[index] if 0 <= index < len(self.class_names) else f"class_{index}"

    @cached_property
    def json(self) -> dict[str, Any]:
        """Json-ready dict: input_path, frame_index (videos), height, width, boxes, masks (COCO RLE)."""
        out: dict[str, Any] = {"input_path": self.input_path}
        if self.frame_index is not None:
            out["frame_index"] = self.frame_index
        out["height"], out["width"] = self.image_size
        out["boxes"] = [
            {
                "cls_id": int(label) - 1,
                "label": self.label_name(label),
                "score": round(float(score), 5),
                "coordinate": [round(float(v), 2) for v in box],
            }
            for box, score, label in zip(self.boxes, self.scores, self.labels, strict=True)
        ]
        out["masks"] = [{"size": list(r["size"]), "counts": r["counts"]} for r in self.rles]
        return out

    @property
    def image(self) -> np.ndarray:
        """The input image, HxWx3 uint8 RGB."""
        if self._image is not None:
            return self._image
        if self.input_path is None:
            raise ValueError("this result carries no image")
        return read_image(self.input_path)

    @cached_property
    def img(self) -> np.ndarray:
        """The overlay picture: HxWx3 uint8 RGB with masks, contours, class and score tags."""
        from instaseg.inference.visualize import draw_instances

        return draw_instances(self.image, self.boxes, self.labels, self.scores, self.rles, self.class_names)

    @property
    def masks(self) -> np.ndarray:
        """Boolean masks [N,H,W] at image resolution, decoded from RLE (N x H x W bytes: mind large N)."""
        h, w = self.image_size
        if not self.rles:
            return np.zeros((0, h, w), dtype=bool)
        rles = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in self.rles]
        return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)

    def print(self, format_json: bool = True, indent: int = 4, ensure_ascii: bool = False) -> None:
        """Print the json (pretty with ``format_json``, else one line)."""
        print(json.dumps(self.json, indent=indent if format_json else None, ensure_ascii=ensure_ascii))

    def _target(self, path_or_dir: str | Path, suffix: str) -> Path:
        path = Path(path_or_dir)
        if path.suffix and not path.is_dir():
            return path
        return path / f"{self.name}{suffix}"

    def save_to_json(self, path_or_dir: str | Path) -> Path:
        """Write the json to a file (a path with a suffix) or to DIR/<name>.json; atomic. Returns the path."""
        return atomic_write_json(self._target(path_or_dir, ".json"), self.json)

    def save_to_img(self, path_or_dir: str | Path) -> Path:
        """Write the overlay to a file (format from its suffix) or to DIR/<name>.jpg (.png for png inputs)."""
        import cv2

        png_input = self.input_path is not None and Path(self.input_path).suffix.lower() == ".png"
        path = self._target(path_or_dir, ".png" if png_input else ".jpg")
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
        ok, data = cv2.imencode(path.suffix, np.ascontiguousarray(self.img[..., ::-1]), params)
        if not ok:
            raise ValueError(f"cannot encode an image as {path.suffix!r}: {path}")
        return atomic_write_bytes(path, data.tobytes())

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict]:
        """COCO results entries (for COCO.loadRes): image_id, category_id, bbox [x,y,w,h], score, segmentation.

        ``category_ids[label - 1]`` gives each category id; default: the checkpoint's ids, else the label itself.
        """
        ids = category_ids if category_ids is not None else self.category_ids
        out = []
        for box, score, label, rle in zip(self.boxes, self.scores, self.labels, self.rles, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(ids[label - 1]) if ids is not None else int(label),
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(score), 5),
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
                }
            )
        return out
