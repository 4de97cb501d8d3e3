"""From a request's image field to pixels: base64 or an allowed URL, checked before anything large is decoded.

Every refusal is a `RequestError` carrying the HTTP status a client should see and one sentence that says what to
change. The pixel limit is read from the image header, so a 50-megapixel picture costs a few bytes of parsing,
not 150 MB of memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.request
from urllib.parse import urlparse

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from instaseg.deploy.serve.config import ServeConfig


class RequestError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``message`` what the client should change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def is_url(text: str) -> bool:
    """PaddleX's rule: an image field starting with http:// or https:// and naming a host is a URL."""
    if not text.startswith(("http://", "https://")):
        return False
    parsed = urlparse(text)
    return bool(parsed.scheme and parsed.netloc)


def decode_base64(text: str) -> bytes:
    """Strict base64 (line breaks and a ``data:...;base64,`` prefix tolerated); anything else is refused."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    compact = "".join(text.split())
    if not compact:
        raise RequestError(422, "image is empty: send the image file's bytes as base64")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, "image is neither an http(s) URL nor valid base64") from None


def _host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower()
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the allow-list: refuse to follow any."""

    def redirect_request(self, *args, **kwargs):  # type: ignore[override]
        return None


def fetch_url(url: str, config: ServeConfig) -> bytes:
    """The bytes at an allowed URL, at most the body limit, within the URL timeout; no redirects."""
    if not config.url_hosts:
        raise RequestError(
            403, "URL inputs are off on this server: send the image as base64 (the operator may allow hosts)"
        )
    host = urlparse(url).hostname or ""
    if not _host_allowed(host, config.url_hosts):
        raise RequestError(403, f"URL host {host!r} is not on this server's allow-list")
    opener = urllib.request.build_opener(_NoRedirect)
    limit = config.max_body_bytes
    try:
        with opener.open(url, timeout=config.url_timeout_s) as response:  # noqa: S310 (scheme checked by is_url)
            data = response.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise RequestError(422, f"fetching the image URL failed with HTTP status {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        raise RequestError(422, f"fetching the image URL failed ({reason})") from None
    if len(data) > limit:
        raise RequestError(413, f"the image at the URL is larger than {config.max_body_mb:g} MB")
    return data


def image_bytes(field: str, config: ServeConfig) -> bytes:
    """The file bytes an image field names: fetched when it is a URL, decoded when base64."""
    return fetch_url(field, config) if is_url(field) else decode_base64(field)


def _is_high_bit_depth(img: Image.Image) -> bool:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return True
    # PIL opens 16-bit RGB(A) PNGs as 8-bit modes; the decoder's raw mode still says 16 bits per sample
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if isinstance(tile[3], tuple) else (tile[3],)
        if args and ";16" in str(args[0]):
            return True
    return False


def decode_image(data: bytes, config: ServeConfig) -> np.ndarray:
    """HxWx3 uint8 RGB pixels, upright per EXIF, like `instaseg.utils.images.read_image` reads a file.

    Refused: empty data, what is not an image, images over the pixel limit (from the header, before decoding),
    more than 8 bits per sample (the scale of 16-bit data is the sender's to choose), truncated files.
    """
    if not data:
        raise RequestError(422, "image is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise RequestError(413, f"image has more than {config.max_megapixels:g} megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(422, "image is not a picture this server can read (JPEG, PNG, BMP, TIFF, WebP)") from None
    with img:
        w, h = img.size
        if w * h > config.max_pixels:
            raise RequestError(
                413, f"image is {w}x{h} ({w * h / 1e6:.1f} megapixels), over this server's "
                f"{config.max_megapixels:g} megapixel limit"
            )
        if w < 1 or h < 1:
            raise RequestError(422, "image has no pixels")
        if _is_high_bit_depth(img):
            raise RequestError(422, "image has more than 8 bits per channel: convert it to 8-bit first")
        try:
            img.load()  # decode every pixel now: a truncated file fails here, not inside the model
            upright = ImageOps.exif_transpose(img)
            rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
            return np.asarray(rgb)
        except Image.DecompressionBombError:
            raise RequestError(413, f"image has more than {config.max_megapixels:g} megapixels") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise RequestError(422, f"image is corrupt or truncated ({e})") from None
