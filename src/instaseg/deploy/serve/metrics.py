"""Prometheus metrics of the service: requests, errors, latency, batch sizes, queue depth.

With several worker processes each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by
`instaseg serve` before the workers start) and ``/metrics`` merges them, so a scrape sees the whole service
whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
ENDPOINTS = {"/instance-segmentation", "/predict", "/", "/health", "/ready", "/metrics", "/docs", "/openapi.json"}


class Metrics:
    """The service's metrics on a registry of their own (tests start several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("instaseg_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter(
            "instaseg_request_errors", "HTTP requests answered with a 4xx or 5xx status", ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "instaseg_request_duration_seconds", "Time from request to answer", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "instaseg_batch_size", "Images per backend call", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "instaseg_batch_duration_seconds", "Time of one backend call (pre-processing to masks)",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "instaseg_queue_depth", "Requests waiting for a batch", multiprocess_mode="livesum", registry=r
        )

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # unknown paths must not grow the label set
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type; merged over worker processes when there are several."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def process_exited(pid: int) -> None:
        """Drop a finished worker's live gauges from the merged view."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)
