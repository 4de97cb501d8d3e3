"""Load test of `instaseg serve` on loopback: throughput, p50/p99 latency and errors with and without dynamic batching,
and the server's memory before and after.

    python bench/serve_load.py --requests 2000 --concurrency 32

Each configuration gets a fresh server (`python -m instaseg serve` on 127.0.0.1, a free port), a short warm-up,
then ``--requests`` PaddleX-style requests from ``--concurrency`` client threads, each on its own keep-alive
connection, cycling over 16 small pictures; the run stops by itself when the requests are sent or after
``--max-seconds``. Configurations: one request per backend call, dynamic batching, and dynamic batching behind a
queue smaller than the concurrency, whose 503s (with Retry-After) are the designed answer to overload. Any other
failure (another status, a dropped connection) makes the script exit 1. ``--repeats`` interleaves the
configurations (A B C A B C) so a change in the machine's load touches all of them alike.

The default model is the tests' tiny Mask R-CNN (64-96 px input): the figures measure the service (HTTP, json,
base64, queueing, batching, RLE) around a fast model, not a production model's speed. The client runs on the same
cores as the server, so on a small machine the two compete; report the load average with the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_helpers import Server, b64, call, make_tiny_checkpoint, metric, png_bytes, sample_image  # noqa: E402

CONFIGS = {
    "one at a time": (["--max-batch-size", "1", "--max-wait-ms", "0"], {200}),
    "dynamic batching": (["--max-batch-size", "8", "--max-wait-ms", "5"], {200}),
    "batching, queue 8": (["--max-batch-size", "8", "--max-wait-ms", "5", "--max-queue", "8"], {200, 503}),
}


@dataclass
class Run:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    retry_after_missing: int = 0
    seconds: float = 0.0
    rss_before: float = 0.0
    rss_after: float = 0.0
    rss_peak: float = 0.0
    mean_batch: float = 0.0


def _rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _bodies() -> list[bytes]:
    return [json.dumps({"image": b64(png_bytes(sample_image(i, 120, 160))), "visualize": False}).encode()
            for i in range(16)]


def _client(port: int, bodies: list[bytes], run: Run, counter: dict, lock: threading.Lock, deadline: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        with lock:
            if counter["next"] >= counter["total"]:
                break
            index = counter["next"]
            counter["next"] += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/instance-segmentation", bodies[index % len(bodies)],
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as e:
            with lock:
                run.failures.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        elapsed = time.perf_counter() - start
        with lock:
            run.statuses[response.status] = run.statuses.get(response.status, 0) + 1
            if response.status == 200:
                run.latencies.append(elapsed)
            elif response.status == 503 and not response.getheader("Retry-After"):
                run.retry_after_missing += 1
    conn.close()


def load(server: Server, name: str, bodies: list[bytes], requests: int, concurrency: int, max_seconds: float) -> Run:
    run = Run(name)
    for body in bodies[:4]:  # warm-up, not counted
        call(server.port, "POST", "/instance-segmentation", body, {"Content-Type": "application/json"})
    run.rss_before = _rss_mb(server.process.pid)
    counter, lock = {"next": 0, "total": requests}, threading.Lock()
    deadline = time.monotonic() + max_seconds
    threads = [threading.Thread(target=_client, args=(server.port, bodies, run, counter, lock, deadline))
               for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        run.rss_peak = max(run.rss_peak, _rss_mb(server.process.pid))
        time.sleep(0.05)
    run.seconds = time.perf_counter() - start
    run.rss_after = _rss_mb(server.process.pid)
    metrics = call(server.port, "GET", "/metrics").body.decode()
    calls = metric(metrics, "instaseg_batch_size_count")
    run.mean_batch = metric(metrics, "instaseg_batch_size_sum") / calls if calls else 0.0
    return run


def report(runs: list[Run], allowed: dict[str, set[int]]) -> bool:
    """Print one row per run; True when nothing failed that was not designed to."""
    print(f"{'configuration':<20} {'sent':>5} {'200':>5} {'503':>5} {'other':>5} {'req/s':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'batch':>5} {'RSS MB before/peak/after':>25}")
    ok = True
    for r in runs:
        sent = sum(r.statuses.values()) + len(r.failures)
        other = sum(n for s, n in r.statuses.items() if s not in allowed[r.name]) + len(r.failures)
        ok = ok and other == 0 and r.retry_after_missing == 0
        lat = np.array(r.latencies) * 1000 if r.latencies else np.zeros(1)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        print(f"{r.name:<20} {sent:>5} {r.statuses.get(200, 0):>5} {r.statuses.get(503, 0):>5} {other:>5} "
              f"{r.statuses.get(200, 0) / r.seconds:>7.1f} {p50:>7.1f} {p99:>7.1f} "
              f"{r.mean_batch:>5.2f} {r.rss_before:>9.0f} / {r.rss_peak:.0f} / {r.rss_after:.0f}")
        for failure in sorted(set(r.failures))[:5]:
            print(f"    failure: {failure}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="a run stops sending after this long")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the configurations, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--model", help="checkpoint or exported model (default: a tiny random Mask R-CNN)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run these configurations only")
    args = parser.parse_args()
    names = args.only or list(CONFIGS)
    bodies = _bodies()
    runs = []
    with tempfile.TemporaryDirectory(prefix="instaseg-serve-load-") as tmp:
        model = Path(args.model) if args.model else make_tiny_checkpoint(Path(tmp) / "tiny.pt")
        for _ in range(args.repeats):
            for name in names:
                options, _ = CONFIGS[name]
                server = Server(model, "--threads", str(args.threads), "--threshold", "0.3", *options,
                                log=Path(tmp) / "server.log")
                try:
                    server.wait_ready()
                    runs.append(load(server, name, bodies, args.requests, args.concurrency, args.max_seconds))
                finally:
                    code = server.stop()
                # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is a clean exit too
                if code not in (0, -signal.SIGTERM) or "Application shutdown complete" not in server.log_text():
                    print(f"{name}: the server did not shut down cleanly (status {code}): {server.log_text()}")
                    return 1
    print(f"{args.requests} requests per run at concurrency {args.concurrency}, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
    ok = report(runs, {name: CONFIGS[name][1] for name in names})
    by_name = {name: [r for r in runs if r.name == name] for name in names}
    if by_name.get("one at a time") and by_name.get("dynamic batching"):
        single = [r.statuses.get(200, 0) / r.seconds for r in by_name["one at a time"]]
        batched = [r.statuses.get(200, 0) / r.seconds for r in by_name["dynamic batching"]]
        print(f"throughput with batching / without: {np.mean(batched) / np.mean(single):.2f}x")
    print("nothing failed but designed 503s" if ok else "FAILED: requests failed other than by design")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
