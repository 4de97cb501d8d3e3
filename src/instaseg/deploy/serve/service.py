"""The model behind the endpoints: loaded once per worker, fed through the batcher, answering `Result`s."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from instaseg.deploy.serve.batching import Batcher, QueueFull, ShuttingDown
from instaseg.deploy.serve.config import ServeConfig
from instaseg.deploy.serve.inputs import RequestError
from instaseg.deploy.serve.metrics import Metrics
from instaseg.inference.result import Result

logger = logging.getLogger(__name__)


def worker_threads(config: ServeConfig) -> int | None:
    """Threads for torch in one worker: as asked, else the cores shared out when there are several workers (each
    worker's threads competing for all cores slows every one of them)."""
    if config.threads:
        return config.threads
    if config.workers > 1:
        return max(1, (os.cpu_count() or 1) // config.workers)
    return None


def load_predictor(config: ServeConfig) -> Any:
    import torch

    from instaseg.inference.predictor import create_model

    threads = worker_threads(config)
    if threads:  # for the worker's lifetime: a serving process runs nothing else
        torch.set_num_threads(threads)
    return create_model(config.model, device=config.device, threshold=config.threshold, tile=config.tile)


class Service:
    """One worker's model, batcher and metrics. ``predictor``: an already loaded one (tests, Ray replicas
    that load before serving); otherwise ``config.model`` is loaded when the app starts."""

    def __init__(self, config: ServeConfig, predictor: Any = None, metrics: Metrics | None = None):
        self.config = config
        self.predictor = predictor
        self.metrics = metrics or Metrics()
        self.batcher: Batcher | None = None
        self.ready = False

    async def start(self) -> None:
        if self.predictor is None:
            self.predictor = await asyncio.to_thread(load_predictor, self.config)
        if self.config.warmup:  # the first call of a backend allocates and compiles: not on a user's time
            await asyncio.to_thread(self.run_batch, [np.zeros((32, 32, 3), dtype=np.uint8)], 1.0)
        self.batcher = Batcher(
            self.run_batch,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.max_wait_ms / 1000.0,
            max_queue=self.config.max_queue,
            on_batch=self._observe_batch,
        )
        self.batcher.start()
        self.ready = True
        logger.info("ready: %r", self.predictor)

    async def stop(self) -> None:
        """Refuse new work, finish what is queued."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()
        Metrics.process_exited(os.getpid())

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.observe_batch(size, seconds)
        self.metrics.queue_depth.set(self.batcher.depth() if self.batcher else 0)

    @property
    def default_threshold(self) -> float:
        return float(self.predictor.threshold)

    def run_batch(self, images: list[np.ndarray], threshold: float) -> list[Result]:
        """One backend call over ``images`` (worker thread); each Result keeps its image for the overlay."""
        p = self.predictor
        detections = p.detect(images, threshold)
        p.reset_timings()  # the predictor keeps per-batch timings; a service must not grow them forever
        return [
            Result(
                boxes=d.boxes, scores=d.scores, labels=d.labels, rles=d.rles, image_size=image.shape[:2],
                class_names=p.class_names, category_ids=p.category_ids, image=image,
            )
            for d, image in zip(detections, images, strict=True)
        ]

    def check_capacity(self) -> None:
        """Refuse before decoding anything when the queue is already full."""
        if not self.ready or self.batcher is None:
            raise RequestError(503, "the service is starting or stopping", self._retry_after())
        if self.batcher.depth() >= self.config.max_queue:
            raise self._busy()

    async def predict(self, image: np.ndarray, threshold: float | None) -> Result:
        self.check_capacity()
        threshold = self.default_threshold if threshold is None else float(threshold)
        self.metrics.queue_depth.set(self.batcher.depth() + 1)
        try:
            return await asyncio.wait_for(self.batcher.submit(image, threshold), self.config.timeout_s)
        except QueueFull:
            raise self._busy() from None
        except ShuttingDown:
            raise RequestError(503, "the service is stopping", self._retry_after()) from None
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within the server's {self.config.timeout_s:g} s timeout") from None

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.config.retry_after_s)}

    def _busy(self) -> RequestError:
        return RequestError(
            503, f"the server is busy ({self.config.max_queue} requests queued): retry shortly", self._retry_after()
        )

    def describe(self) -> dict[str, Any]:
        """What /ready tells: the model's file name (not its path), backend, classes, limits."""
        p = self.predictor
        return {
            "ready": self.ready,
            "model": Path(self.config.model).name if self.config.model else None,
            "backend": getattr(p.backend, "name", None) if p is not None else None,
            "classes": list(p.class_names) if p is not None else [],
            "threshold": float(p.threshold) if p is not None else None,
            "max_batch_size": self.config.max_batch_size,
            "max_body_mb": self.config.max_body_mb,
            "max_megapixels": self.config.max_megapixels,
            "url_inputs": bool(self.config.url_hosts),
            "api_key_required": bool(self.config.api_key),
        }
