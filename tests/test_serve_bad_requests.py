"""The bad-request corpus: each broken request gets a 4xx with a json error (no stack trace), and the server answers
the next good request. One real server on 127.0.0.1 with its default limits (URL inputs off, 20 MB bodies,
30 megapixels).
"""

from __future__ import annotations

import http.client
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from serve_helpers import b64, call, make_tiny_checkpoint, multipart, png_bytes, post_json, running_server, sample_image

GOOD_PNG = png_bytes(sample_image(0))
JSON = {"Content-Type": "application/json"}
FORM_X = "multipart/form-data; boundary=x"


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", rgb)
    assert ok
    return data.tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and that holds no pixels at all: only a reader that stops at the
    header can answer it quickly."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 16)  # a first row's start, then nothing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _fifty_megapixels() -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((6250, 8000), dtype=np.uint8))  # 50 MP of black: ~50 KB as png
    assert ok
    return data.tobytes()


def _sixteen_bit(channels: int) -> bytes:
    shape = (40, 50, 3) if channels == 3 else (40, 50)
    ok, data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 65535, shape, dtype=np.uint16))
    assert ok
    return data.tobytes()


def _paddlex(payload: object, headers: dict | None = None) -> tuple[str, str, bytes, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return "POST", "/instance-segmentation", body, {**JSON, **(headers or {})}


def _native_form(fields: dict, files: dict) -> tuple[str, str, bytes, dict]:
    body, content_type = multipart(fields, files)
    return "POST", "/predict", body, {"Content-Type": content_type}


TRUNCATED_JPEG = _jpeg(sample_image(1, 120, 160))
TRUNCATED_JPEG = TRUNCATED_JPEG[: len(TRUNCATED_JPEG) // 2]
CASES = {
    "malformed json": (_paddlex(b'{"image": "abc"'), 400),
    "empty body": (_paddlex(b""), 400),
    "whitespace body": (_paddlex(b"   \n"), 400),
    "not utf-8": (_paddlex(b'{"image": "\xff\xfe"}'), 400),
    "json nested too deep": (_paddlex(b"[" * 100000 + b"]" * 100000), 400),
    "json array": (_paddlex([1, 2]), 422),
    "json string": (_paddlex("image"), 422),
    "no image field": (_paddlex({"threshold": 0.5}), 422),
    "image is a number": (_paddlex({"image": 5}), 422),
    "image is null": (_paddlex({"image": None}), 422),
    "image is an object": (_paddlex({"image": {"data": "abc"}}), 422),
    "image is empty": (_paddlex({"image": ""}), 422),
    "image is blank": (_paddlex({"image": "   "}), 422),
    "bad base64": (_paddlex({"image": "@@ not base64 @@"}), 422),
    "base64 of text": (_paddlex({"image": b64(b"hello, this is not a picture")}), 422),
    "base64 of a pdf": (_paddlex({"image": b64(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n")}), 422),
    "truncated jpeg": (_paddlex({"image": b64(TRUNCATED_JPEG)}), 422),
    "truncated png": (_paddlex({"image": b64(GOOD_PNG[: len(GOOD_PNG) // 2])}), 422),
    "16-bit grey png": (_paddlex({"image": b64(_sixteen_bit(1))}), 422),
    "16-bit colour png": (_paddlex({"image": b64(_sixteen_bit(3))}), 422),
    "50-megapixel png": (_paddlex({"image": b64(_fifty_megapixels())}), 413),
    "400-megapixel header": (_paddlex({"image": b64(_png_header_only(20000, 20000))}), 413),
    "wrong content type": (_paddlex({"image": b64(GOOD_PNG)}, {"Content-Type": "text/plain"}), 415),
    "form content type": (_paddlex(b"image=abc", {"Content-Type": "application/x-www-form-urlencoded"}), 415),
    "negative threshold": (_paddlex({"image": b64(GOOD_PNG), "threshold": -0.1}), 422),
    "threshold above one": (_paddlex({"image": b64(GOOD_PNG), "threshold": 1.5}), 422),
    "threshold as text": (_paddlex({"image": b64(GOOD_PNG), "threshold": "0.5"}), 422),
    "threshold NaN": (_paddlex(b'{"image": "' + b64(GOOD_PNG).encode() + b'", "threshold": NaN}'), 422),
    "threshold infinite": (_paddlex(b'{"image": "' + b64(GOOD_PNG).encode() + b'", "threshold": 1e999}'), 422),
    "visualize as text": (_paddlex({"image": b64(GOOD_PNG), "visualize": "yes"}), 422),
    "url while urls are off": (_paddlex({"image": "http://127.0.0.1:9/picture.png"}), 403),
    "file url": (_paddlex({"image": "file:///etc/passwd"}), 422),
    "oversized body": (_paddlex(b'{"image": "' + b"A" * (21 * 1024 * 1024) + b'"}'), 413),
    "get on a post endpoint": (("GET", "/instance-segmentation", b"", {}), 405),
    "unknown path": (("POST", "/no-such-endpoint", b"{}", JSON), 404),
    "native form without file": (_native_form({"threshold": "0.5"}, {}), 422),
    "native form with a non-image": (_native_form({}, {"file": ("notes.txt", b"just text")}), 422),
    "native form bad threshold": (_native_form({"threshold": "abc"}, {"file": ("a.png", GOOD_PNG)}), 422),
    "native form bad polygons": (_native_form({"polygons": "maybe"}, {"file": ("a.png", GOOD_PNG)}), 422),
    "native form without boundary": (("POST", "/predict", b"--x\r\n", {"Content-Type": "multipart/form-data"}), 400),
    "native form of nonsense": (("POST", "/predict", b"--x\r\nnonsense", {"Content-Type": FORM_X}), 422),
    "native xml": (("POST", "/predict", b"<image/>", {"Content-Type": "application/xml"}), 415),
    "native polygons as text": (("POST", "/predict", json.dumps({"image": b64(GOOD_PNG), "polygons": "1"}).encode(),
                                 JSON), 422),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("serve-bad") / "tiny.pt")
    with running_server(ckpt, "--threshold", "0.3", log=tmp_path_factory.mktemp("log") / "server.log") as s:
        yield s


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def _assert_good_request_answered(port: int) -> None:
    answer = post_json(port, "/instance-segmentation", {"image": b64(GOOD_PNG), "visualize": False})
    assert answer.status == 200 and answer.json["errorCode"] == 0


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_gets_json_4xx(server, name: str) -> None:
    (method, path, body, headers), status = CASES[name]
    answer = call(server.port, method, path, body or None, headers)
    assert answer.status == status, (name, answer.status, answer.body[:300])
    assert answer.json is not None, answer.body[:300]
    assert set(answer.json) == {"logId", "errorCode", "errorMsg"}
    assert answer.json["errorCode"] == status and answer.json["errorMsg"]
    assert "Traceback" not in answer.body.decode(errors="replace") and 'File "' not in answer.json["errorMsg"]
    _assert_good_request_answered(server.port)


def test_oversized_body_without_length(server) -> None:
    """A chunked body carries no Content-Length: it is counted as it streams and refused at the limit."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    chunks = (b"A" * (1024 * 1024) for _ in range(24))
    conn.request("POST", "/instance-segmentation", body=chunks, headers=JSON, encode_chunked=True)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 413 and body["errorCode"] == 413
    _assert_good_request_answered(server.port)


def test_large_image_refused_from_its_header(server) -> None:
    """The 400-megapixel header has no pixels behind it: had the server decoded it, it would have said the file
    is truncated (422), not too large (413)."""
    answer = post_json(server.port, "/instance-segmentation", {"image": b64(_png_header_only(20000, 20000))})
    assert answer.status == 413 and "megapixel" in answer.json["errorMsg"]
    small = post_json(server.port, "/instance-segmentation", {"image": b64(_png_header_only(100, 100))})
    assert small.status == 422  # the same file at a size under the limit does get decoded, and fails there


def test_errors_are_counted(server) -> None:
    text = call(server.port, "GET", "/metrics").body.decode()
    assert 'instaseg_request_errors_total{endpoint="/instance-segmentation",status="422"}' in text


def test_url_inputs_refused_without_fetching(server, tmp_path: Path) -> None:
    answer = post_json(server.port, "/instance-segmentation", {"image": "https://example.com/a.png"})
    assert answer.status == 403 and "URL inputs are off" in answer.json["errorMsg"]
