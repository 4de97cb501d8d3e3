"""`instaseg serve --workers 2` for real: two worker processes, metrics merged over both, and SIGTERM under load
ends the service cleanly: every request that got an answer got a 200, requests in flight at the signal are
finished, and the process exits with status 0."""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest

from serve_helpers import Server, b64, call, make_tiny_checkpoint, metric, png_bytes, post_json, sample_image

PNG = png_bytes(sample_image(0))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve-workers")
    s = Server(make_tiny_checkpoint(root / "tiny.pt"), "--workers", "2", log=root / "server.log")
    try:
        yield s.wait_ready(timeout=180)
    finally:
        s.stop()


def _workers(server: Server) -> list[psutil.Process]:
    children = psutil.Process(server.process.pid).children()
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def test_two_workers_and_merged_metrics(server) -> None:
    assert len(_workers(server)) == 2
    for _ in range(12):
        assert post_json(server.port, "/instance-segmentation", {"image": b64(PNG), "visualize": False}).status == 200
    # whichever worker takes a scrape, it reports both workers' requests
    name = 'instaseg_requests_total{endpoint="/instance-segmentation",status="200"}'
    counts = {metric(call(server.port, "GET", "/metrics").body.decode(), name) for _ in range(6)}
    assert counts == {12.0}


def test_sigterm_under_load_finishes_in_flight_requests(server) -> None:
    statuses: list[tuple[int, float]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answer = post_json(server.port, "/instance-segmentation", {"image": b64(PNG), "visualize": False})
            except OSError:  # refused or closed once the server stops accepting: the request was never taken
                return
            statuses.append((answer.status, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    code = server.stop(signal.SIGTERM, timeout=60)
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0, server.log_text()
    assert statuses and all(status == 200 for status, _ in statuses), statuses
    assert any(at > signalled for _, at in statuses)  # answered after the signal: finished, not dropped
    assert "Traceback" not in server.log_text()
