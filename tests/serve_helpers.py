"""Starting `instaseg serve` for real on 127.0.0.1 and calling it over HTTP, for the serve tests and the load bench.

Only the standard library's http.client talks to the server, so the tests see exactly the bytes a client sees.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog"]
CATEGORY_IDS = [3, 7]
TINY_SERVE = [
    "input.min_size=64", "input.max_size=96", "eval.score_threshold=0.0", "eval.max_dets=30",
    "model.fpn_channels=16", "model.representation_size=64", "model.mask_head_layers=[16]",
    "model.mask_dim_reduced=16", "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=30",
]


def make_tiny_checkpoint(path: Path, overrides: list[str] = TINY_SERVE) -> Path:
    """maskrcnn_fast shrunk, random init, biased so that it finds confident instances with partly filled masks:
    what the service tests need is plumbing and geometry, not accuracy."""
    import torch

    from instaseg.models.checkpoint import save_checkpoint
    from instaseg.models.factory import build_model
    from instaseg.models.recipes import apply_overrides, load_recipe

    torch.manual_seed(0)
    recipe = apply_overrides(load_recipe("maskrcnn_fast"), overrides)
    model = build_model(recipe, len(CLASSES), weights="none")
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += 4.0
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.1)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias[1] += 1.0
    return save_checkpoint(path, model, recipe, CLASSES, CATEGORY_IDS)


def sample_image(seed: int = 0, h: int = 60, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (250, 40, 40), -1)
    return img


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)
    assert ok
    return data.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    json: dict | list | None = field(default=None)


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60.0) -> Answer:
    """One HTTP request on a fresh connection; the answer's json parsed when it is json."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()
    if answer.headers.get("content-type", "").startswith("application/json"):
        answer.json = json.loads(data)
    return answer


def post_json(port: int, path: str, payload: dict, headers: dict | None = None) -> Answer:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return call(port, "POST", path, json.dumps(payload).encode(), headers)


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus text exposition's samples whose line starts with ``name`` (labels included)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "instaseg-test-boundary-7d2f"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Server:
    """`python -m instaseg serve ...` in a subprocess on a free loopback port, ready when /ready says so."""

    def __init__(self, model: Path, *args: str, log: Path | None = None, env: dict | None = None):
        self.port = free_port()
        self.log = log
        command = [sys.executable, "-m", "instaseg", "serve", "--model", str(model), "--port", str(self.port), *args]
        environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._out = out
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}: {self.log_text()}")
            with contextlib.suppress(OSError):
                if call(self.port, "GET", "/ready", timeout=5).status == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready within {timeout} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log and self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its workers only
                self.process.wait(10)
        if self._out is not subprocess.DEVNULL:
            self._out.close()
        return self.process.returncode


@contextlib.contextmanager
def running_server(model: Path, *args: str, log: Path | None = None, env: dict | None = None) -> Iterator[Server]:
    server = Server(model, *args, log=log, env=env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
