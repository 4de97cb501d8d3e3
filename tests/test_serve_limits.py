"""The service's limits and safety, on a real uvicorn server on 127.0.0.1 run in this process around a model
that waits for the test's word: a full queue answers 503 with Retry-After, a slow answer 504, the API key is
required where set, URL inputs work only for allowed hosts, and stopping the server finishes the request in
flight."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from instaseg.data.masks import mask_to_rle
from instaseg.deploy.serve.app import create_app
from instaseg.deploy.serve.config import ServeConfig
from instaseg.inference.postprocess import Detections
from serve_helpers import b64, call, free_port, png_bytes, post_json, sample_image

PNG = png_bytes(sample_image(0))


class GatedModel:
    """Answers one square instance per image, once ``gate`` is open."""

    threshold = 0.5
    class_names = ["thing"]
    category_ids = None
    backend = SimpleNamespace(name="fake", device="cpu")

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.images = 0

    def detect(self, images: list[np.ndarray], threshold: float) -> list[Detections]:
        self.entered.release()
        assert self.gate.wait(30), "the test never opened the gate"
        self.images += len(images)
        out = []
        for image in images:
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
            mask[2:8, 3:9] = 1
            out.append(Detections(np.array([[3, 2, 9, 8]], np.float32), np.array([0.9], np.float32),
                                  np.array([1]), [mask_to_rle(mask)]))
        return out

    def reset_timings(self) -> None:
        pass


@contextlib.contextmanager
def in_process_server(model: GatedModel, **settings) -> Iterator[SimpleNamespace]:
    import uvicorn

    config = ServeConfig(warmup=False, **settings)
    app = create_app(config, predictor=model)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield SimpleNamespace(port=port, server=server, thread=thread, app=app)
    finally:
        model.gate.set()
        server.should_exit = True
        thread.join(30)


def _in_background(fn, *args) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("answer", fn(*args)))
    thread.start()
    return thread, out


def _paddlex(port: int, headers: dict | None = None):
    return post_json(port, "/instance-segmentation", {"image": b64(PNG), "visualize": False}, headers)


def test_full_queue_answers_503_with_retry_after() -> None:
    model = GatedModel()
    with in_process_server(model, max_batch_size=1, max_wait_ms=0, max_queue=2) as s:
        first = _in_background(_paddlex, s.port)
        assert model.entered.acquire(timeout=30)  # the model holds the first request
        queued = [_in_background(_paddlex, s.port) for _ in range(2)]
        batcher = s.app.state.service.batcher
        deadline = time.monotonic() + 30
        while batcher.depth() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = _paddlex(s.port)
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert refused.json["errorCode"] == 503 and "busy" in refused.json["errorMsg"]
        model.gate.set()
        for thread, out in (first, *queued):
            thread.join(30)
            assert out["answer"].status == 200  # the queued requests are answered once the model is free


def test_slow_answer_gets_504() -> None:
    model = GatedModel()
    with in_process_server(model, timeout_s=0.3) as s:
        answer = _paddlex(s.port)
        assert answer.status == 504 and "timeout" in answer.json["errorMsg"]
        model.gate.set()
        assert _paddlex(s.port).status == 200


def test_api_key_is_required_on_prediction_endpoints() -> None:
    model = GatedModel()
    model.gate.set()
    with in_process_server(model, api_key="s3cret-key") as s:
        assert _paddlex(s.port).status == 401
        assert _paddlex(s.port, {"X-API-Key": "wrong"}).status == 401
        assert _paddlex(s.port, {"X-API-Key": "s3cret-key"}).status == 200
        assert _paddlex(s.port, {"Authorization": "Bearer s3cret-key"}).status == 200
        assert post_json(s.port, "/predict", {"image": b64(PNG)}).status == 401
        assert call(s.port, "GET", "/health").status == 200  # probes need no key
        assert call(s.port, "GET", "/ready").json["api_key_required"] is True


@contextlib.contextmanager
def picture_host() -> Iterator[int]:
    """A loopback HTTP server with /picture.png, /missing.png (404) and /moved.png (a redirect)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/picture.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)
            elif self.path == "/moved.png":
                self.send_response(302)
                self.send_header("Location", "/picture.png")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        thread.join(10)


@pytest.mark.parametrize(
    "path, host, status",
    [("/picture.png", "127.0.0.1", 200), ("/picture.png", "localhost", 403), ("/missing.png", "127.0.0.1", 422),
     ("/moved.png", "127.0.0.1", 422)],
)
def test_url_inputs_only_from_allowed_hosts(path: str, host: str, status: int) -> None:
    model = GatedModel()
    model.gate.set()
    with picture_host() as picture_port, in_process_server(model, url_hosts=["127.0.0.1"]) as s:
        answer = post_json(s.port, "/instance-segmentation", {"image": f"http://{host}:{picture_port}{path}"})
        assert answer.status == status, answer.body
        if status == 200:
            assert len(answer.json["result"]["instances"]) == 1


def test_stopping_finishes_the_request_in_flight() -> None:
    model = GatedModel()
    with in_process_server(model) as s:
        thread, out = _in_background(_paddlex, s.port)
        assert model.entered.acquire(timeout=30)
        s.server.should_exit = True  # what SIGTERM does: stop accepting, let requests in flight finish
        time.sleep(0.3)
        assert s.thread.is_alive()  # still waiting on the request in flight
        model.gate.set()
        thread.join(30)
        s.thread.join(30)
        assert out["answer"].status == 200
        assert not s.thread.is_alive()
        assert s.app.state.service.ready is False
