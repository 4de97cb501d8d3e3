"""`instaseg serve` for real on 127.0.0.1, called over HTTP: PaddleX's endpoint and the native one give the Python
API's masks; health, readiness, metrics and the OpenAPI page answer; concurrent requests are batched and still
get their own image's answer. One server for the module (the bad-request corpus is in test_serve_bad_requests.py).
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

import instaseg
from instaseg.data.masks import mask_to_polygons
from serve_helpers import (
    b64,
    call,
    make_tiny_checkpoint,
    metric,
    multipart,
    png_bytes,
    post_json,
    running_server,
    sample_image,
)

THRESHOLD = 0.3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.pt")


@pytest.fixture(scope="module")
def server(ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with running_server(ckpt, "--threshold", str(THRESHOLD), log=log) as s:
        yield s


@pytest.fixture(scope="module")
def model(ckpt: Path):
    return instaseg.create_model(ckpt, threshold=THRESHOLD)


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "picture.png"
    path.write_bytes(png_bytes(sample_image(0)))
    return path


def _rounded(box: list[float]) -> tuple[int, int, int, int]:
    return tuple(int(round(v)) for v in box)  # PaddleX's rule: Python's round of each coordinate


def test_paddlex_masks_equal_python_api(server, model, picture: Path) -> None:
    expected = next(model.predict(picture))
    answer = post_json(server.port, "/instance-segmentation", {"image": b64(picture.read_bytes())})
    assert answer.status == 200, answer.body
    body = answer.json
    assert set(body) == {"logId", "errorCode", "errorMsg", "result"}
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and len(body["logId"]) == 36
    instances = body["result"]["instances"]
    assert len(instances) == len(expected) > 0
    full_masks = expected.masks
    for inst, box, score, label, mask in zip(
        instances, expected.boxes, expected.scores, expected.labels, full_masks, strict=True
    ):
        assert set(inst) == {"bbox", "categoryId", "categoryName", "score", "mask"}
        assert inst["bbox"] == [float(v) for v in box]
        assert inst["categoryId"] == int(label) - 1 and inst["categoryName"] == expected.label_name(label)
        assert inst["score"] == pytest.approx(float(score))
        x0, y0, x1, y1 = _rounded(inst["bbox"])
        h, w = inst["mask"]["size"]
        assert (h, w) == (y1 - y0, x1 - x0)
        decoded = mask_utils.decode({"size": [h, w], "counts": inst["mask"]["rleResult"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask[y0:y1, x0:x1])
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(body["result"]["image"]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (*expected.image_size, 3)  # visualize defaults to on, as in PaddleX


def test_paddlex_visualize_false_and_threshold(server, model, picture: Path) -> None:
    answer = post_json(server.port, "/instance-segmentation",
                       {"image": b64(picture.read_bytes()), "visualize": False, "threshold": 0.9})
    assert answer.status == 200
    assert answer.json["result"]["image"] is None
    expected = next(model.predict(picture, threshold=0.9))
    assert [i["score"] for i in answer.json["result"]["instances"]] == pytest.approx(expected.scores.tolist())
    assert all(i["score"] >= 0.9 for i in answer.json["result"]["instances"])


def test_native_json_equals_python_api(server, model, picture: Path) -> None:
    expected = next(model.predict(picture))
    answer = post_json(server.port, "/predict", {"image": b64(picture.read_bytes()), "polygons": True})
    assert answer.status == 200, answer.body
    body = answer.json
    assert body["boxes"] == expected.json["boxes"]
    assert body["masks"] == expected.json["masks"]  # full-image COCO RLE, byte for byte
    assert (body["height"], body["width"]) == expected.image_size
    assert "image" not in body
    assert len(body["polygons"]) == len(expected)
    for polys, mask in zip(body["polygons"], expected.masks, strict=True):
        assert polys == mask_to_polygons(mask)  # the contours of the whole mask, though traced on its box alone


def test_native_multipart_equals_python_api(server, model, picture: Path) -> None:
    expected = next(model.predict(picture))
    body, content_type = multipart({"visualize": "true"}, {"file": ("picture.png", picture.read_bytes())})
    answer = call(server.port, "POST", "/predict", body, {"Content-Type": content_type})
    assert answer.status == 200, answer.body
    assert answer.json["masks"] == expected.json["masks"]
    assert answer.json["boxes"] == expected.json["boxes"]
    assert answer.json["input_path"] == "picture.png"
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(answer.json["image"]), np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (*expected.image_size, 3)


def test_health_ready_docs(server) -> None:
    health = call(server.port, "GET", "/health")
    assert health.status == 200 and health.json["errorCode"] == 0 and health.json["errorMsg"] == "Healthy"
    ready = call(server.port, "GET", "/ready")
    assert ready.status == 200 and ready.json["ready"] is True
    assert ready.json["classes"] == ["cat", "dog"] and ready.json["model"] == "tiny.pt"  # a name, never a path
    spec = call(server.port, "GET", "/openapi.json").json
    assert {"/instance-segmentation", "/predict", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    request_schema = spec["paths"]["/instance-segmentation"]["post"]["requestBody"]["content"]["application/json"]
    assert set(request_schema["schema"]["properties"]) == {"image", "threshold", "visualize"}
    docs = call(server.port, "GET", "/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()
    page = call(server.port, "GET", "/")
    assert page.status == 200 and b'id="file"' in page.body


def test_concurrent_requests_are_batched_and_answered_each(server, model) -> None:
    images = [sample_image(seed) for seed in range(1, 13)]
    before = call(server.port, "GET", "/metrics").body.decode()
    answers: dict[int, object] = {}

    def send(i: int) -> None:
        answers[i] = post_json(server.port, "/predict", {"image": b64(png_bytes(images[i]))})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = call(server.port, "GET", "/metrics").body.decode()
    for i, image in enumerate(images):
        answer = answers[i]
        assert answer.status == 200
        expected = model.detect([image])[0]
        got = np.array([b["coordinate"] for b in answer.json["boxes"]]).reshape(-1, 4)
        # a batch may round differently in the last bits than one image alone: same instances, same masks
        np.testing.assert_allclose(got, expected.boxes, atol=0.02)
        for rle, exp in zip(answer.json["masks"], expected.rles, strict=True):
            a = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            b = mask_utils.decode({"size": exp["size"], "counts": exp["counts"].encode()})
            assert (a != b).mean() < 0.005
    calls = metric(after, "instaseg_batch_size_count") - metric(before, "instaseg_batch_size_count")
    images_run = metric(after, "instaseg_batch_size_sum") - metric(before, "instaseg_batch_size_sum")
    assert images_run == len(images)
    assert calls < len(images)  # twelve requests at once share backend calls
    assert metric(after, 'instaseg_requests_total{endpoint="/predict",status="200"}') >= len(images)
    assert "instaseg_queue_depth" in after and "instaseg_request_duration_seconds_bucket" in after
