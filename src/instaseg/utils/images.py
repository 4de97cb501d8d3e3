"""Reading images the same way everywhere (conversion, checking, training, prediction).

Convention: EXIF orientation is applied (the image is seen upright, as viewers show it), and annotations are
taken to be in that upright frame — the convention of LabelMe, CVAT and COCO tools. Every image comes out as
8-bit RGB: grayscale is replicated, alpha is dropped, 16-bit is scaled down to 8 bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from instaseg.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an HxWx3 uint8 RGB array, upright per EXIF; a corrupt file raises UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError("image not found", path)
    try:
        with Image.open(path) as img:
            img.load()  # force full decode so truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Image.DecompressionBombError as e:  # over PIL's pixel limit: refused before any memory is taken
        raise UserError(f"image too large to decode ({e})", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt or unreadable image ({e})", path) from None


def decode_image(data: bytes, source: str | Path) -> np.ndarray:
    """Image bytes (e.g. an object read from a store) -> HxWx3 uint8 RGB like `read_image`; ``source`` names it."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt or unreadable image ({e})", source) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the upright image, reading only the header."""
    path = Path(path)
    if not path.is_file():
        raise UserError("image not found", path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            # PNG's own getexif decodes every pixel to look for an eXIf chunk after the image data; the
            # chunks before it (the usual place) are read at open, so the generic reader stays header-only
            exif = Image.Image.getexif(img) if img.format == "PNG" else img.getexif()
            orientation = exif.get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt or unreadable image ({e})", path) from None
    # orientations 5-8 rotate by 90 degrees: the upright image swaps width and height
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly or recursively under ``folder``, sorted for determinism."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
