"""Serving the app with uvicorn: one or several worker processes, each with its own model.

Workers are started by uvicorn importing `instaseg.deploy.serve.app.app_from_environment`, the settings travelling
in the environment. On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets the requests in flight finish
(at most ``graceful_timeout_s``), then the app's shutdown drains the batch queue.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from instaseg.deploy.serve.config import ServeConfig
from instaseg.deploy.serve.metrics import MULTIPROC_ENV

logger = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def run(config: ServeConfig, log_level: str = "info") -> None:
    """Serve until stopped. Blocks; the caller has checked that the model loads."""
    import uvicorn

    os.environ.update(config.to_env())
    metrics_dir = None
    if config.workers > 1:  # each worker writes its metrics to files that /metrics merges
        metrics_dir = tempfile.mkdtemp(prefix="instaseg-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "instaseg.deploy.serve.app:app_from_environment",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_level=log_level,
            timeout_graceful_shutdown=config.graceful_timeout_s,
            server_header=False,
            proxy_headers=False,  # a client's X-Forwarded-For is not trusted unless a proxy is configured
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
