"""Turning whatever a user passes to `predict` into a lazy stream of images.

Accepted: a file path (image or video), a folder (its images, recursively), a glob, a numpy array (HxWx3 uint8,
RGB unless ``bgr=True``; HxW gray too; a 4-D array is a stack of images), a PIL image, or a list of any of these.
Nothing is decoded before it is needed: a folder of 10,000 images costs a sorted list of paths, and video frames
are read one at a time. A file that cannot be read does not stop the stream: its item carries the error, raised
when the image is asked for, so the caller decides whether to skip it.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from instaseg.errors import UserError
from instaseg.utils.images import IMAGE_EXTENSIONS, _to_rgb, list_images, read_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_GLOB_CHARS = set("*?[")


@dataclass
class InputItem:
    """One image to predict on: already decoded (arrays, PIL, video frames) or a path read on demand."""

    name: str  # output file stem, unique within one stream; may hold '/' for images in sub folders
    path: Path | None = None
    frame_index: int | None = None
    image: np.ndarray | None = None
    error: UserError | None = None

    def read(self) -> np.ndarray:
        """The HxWx3 uint8 RGB image; a corrupt or unreadable file raises its UserError here."""
        if self.error is not None:
            raise self.error
        if self.image is not None:
            return self.image
        assert self.path is not None
        return read_image(self.path)


def array_to_rgb(array: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Check a user array and return it as contiguous HxWx3 uint8 RGB."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise UserError(f"expected a uint8 image array, got {dtype} (scale floats to 0..255 and cast to uint8)")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UserError(f"expected an HxWx3 image array, got shape {tuple(array.shape)}")
    array = array[..., :3]
    return np.ascontiguousarray(array[..., ::-1] if bgr else array)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image as HxWx3 uint8 RGB, upright per EXIF like files read from disk."""
    return _to_rgb(ImageOps.exif_transpose(img))


def expand_paths(spec: str | Path) -> list[Path]:
    """A path, folder or glob -> the image and video files it names, sorted; nothing found is a UserError."""
    path = Path(spec)
    if path.is_dir():
        found = list_images(path)
        if not found:
            raise UserError("no images in folder", path)
        return found
    if path.exists():
        return [path]
    if _GLOB_CHARS & set(str(spec)):
        media = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
        found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).suffix.lower() in media)
        if not found:
            raise UserError("no images or videos match the pattern", spec)
        return found
    raise UserError("input not found", path)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def iter_video(path: Path, name: str) -> Iterator[InputItem]:
    """Frames of a video one at a time (RGB), with their index; an unopenable video is one error item."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        yield InputItem(name=name, path=path, error=UserError("cannot open video", path))
        return
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            yield InputItem(name=f"{name}_{index:06d}", path=path, frame_index=index, image=rgb)
            index += 1
    finally:
        cap.release()


def video_frame_count(path: Path) -> int:
    """Frame count from the container header (may be approximate for some codecs); 0 when unknown."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if cap.isOpened() else 0
    finally:
        cap.release()


class _Names:
    """Makes output names unique: a second 'x' becomes 'x_2' (two folders may both hold x.jpg)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, name: str) -> str:
        unique, k = name, 1
        while unique in self.seen:
            k += 1
            unique = f"{name}_{k}"
        self.seen.add(unique)
        return unique


def _path_items(spec: str | Path, names: _Names) -> Iterator[InputItem]:
    root = Path(spec)
    for path in expand_paths(spec):
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        stem = rel.with_suffix("").as_posix()
        if is_video(path):
            yield from iter_video(path, names(stem))
        else:
            yield InputItem(name=names(stem), path=path)


def iter_inputs(inputs: Any, bgr: bool = False, names: _Names | None = None) -> Iterator[InputItem]:
    """Lazily expand ``inputs`` (see the module doc) into InputItems, in order."""
    names = names or _Names()
    if isinstance(inputs, (str, Path)):
        yield from _path_items(inputs, names)
    elif isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        for array in inputs:
            yield InputItem(name=names("array"), image=array_to_rgb(array, bgr))
    elif isinstance(inputs, np.ndarray):
        yield InputItem(name=names("array"), image=array_to_rgb(inputs, bgr))
    elif isinstance(inputs, Image.Image):
        stem = Path(inputs.filename).stem if getattr(inputs, "filename", "") else "image"
        yield InputItem(name=names(stem), image=pil_to_rgb(inputs))
    elif isinstance(inputs, Iterable):
        for one in inputs:
            yield from iter_inputs(one, bgr, names)
    else:
        raise UserError(f"cannot predict on a {type(inputs).__name__}: give a path, folder, glob, array or image")


def count_inputs(inputs: Any) -> int | None:
    """How many images ``inputs`` will yield (video frames from headers), without decoding; None if unknowable."""
    if isinstance(inputs, (str, Path)):
        return sum(video_frame_count(p) if is_video(p) else 1 for p in expand_paths(inputs))
    if isinstance(inputs, np.ndarray):
        return len(inputs) if inputs.ndim == 4 else 1
    if isinstance(inputs, Image.Image):
        return 1
    if isinstance(inputs, (list, tuple)):
        counts = [count_inputs(one) for one in inputs]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]
    return None
