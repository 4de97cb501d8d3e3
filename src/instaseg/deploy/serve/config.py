"""What a running service is told: the model, its limits, its batching, who may call it.

One dataclass, passed to every worker process as json in an environment variable (uvicorn starts workers by
importing an app factory, so the settings cannot travel as Python objects).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from instaseg.errors import UserError

CONFIG_ENV = "INSTASEG_SERVE_CONFIG"
API_KEY_ENV = "INSTASEG_API_KEY"


@dataclass
class ServeConfig:
    """Settings of `instaseg serve`; every default is the safe one.

    ``max_batch_size`` / ``max_wait_ms``: dynamic batching gathers up to that many queued requests, waiting at most
    that long after the first, into one backend call (1 / 0: one request per call). ``max_queue``: requests
    waiting beyond it are answered 503 with Retry-After. ``timeout_s``: a request not answered by then gets 504.
    ``max_body_mb`` / ``max_megapixels``: larger bodies and images are answered 413, the image refused from its
    header before its pixels are decoded. ``url_hosts``: host names whose http(s) URLs may be fetched as inputs
    (empty: URL inputs are off, since a server that fetches URLs is a door into its network). ``api_key``: when
    set, the prediction endpoints want it as ``X-API-Key`` or ``Authorization: Bearer``.
    """

    model: str = ""
    device: str = "cpu"
    threshold: float | None = None
    tile: str | int | None = "auto"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    threads: int | None = None  # torch's CPU threads per worker; None: the cores split over the workers
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    timeout_s: float = 30.0
    max_body_mb: float = 20.0
    max_megapixels: float = 30.0
    url_hosts: list[str] = field(default_factory=list)
    url_timeout_s: float = 5.0
    api_key: str | None = None
    visualize: bool = True  # PaddleX's default: the overlay comes back unless the request says visualize=false
    graceful_timeout_s: float = 30.0
    retry_after_s: int = 1
    warmup: bool = True

    def __post_init__(self) -> None:
        checks = (
            (self.workers >= 1, "workers must be at least 1"),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
            (self.max_batch_size >= 1, "max batch size must be at least 1"),
            (self.max_wait_ms >= 0, "max wait must not be negative"),
            (self.max_queue >= 1, "max queue must be at least 1"),
            (self.timeout_s > 0, "timeout must be positive"),
            (self.max_body_mb > 0, "max body size must be positive"),
            (self.max_megapixels > 0, "max megapixels must be positive"),
            (0 < self.port < 65536, f"port {self.port} is out of range"),
        )
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.url_hosts = [h.strip().lower() for h in self.url_hosts if h.strip()]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    def to_env(self) -> dict[str, str]:
        """Environment variables that carry this config to worker processes; the API key travels apart."""
        settings = asdict(self)
        key = settings.pop("api_key")
        env = {CONFIG_ENV: json.dumps(settings)}
        if key:
            env[API_KEY_ENV] = key
        return env

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise UserError(f"{CONFIG_ENV} is not set: start the service with `instaseg serve`")
        known = {f.name for f in fields(cls)}
        settings = {k: v for k, v in json.loads(raw).items() if k in known}
        return cls(**settings, api_key=os.environ.get(API_KEY_ENV) or None)
