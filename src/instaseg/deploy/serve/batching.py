"""Dynamic batching: requests queued within a few milliseconds of each other share one backend call.

The event loop never runs the model: one worker thread does, a batch at a time, so the loop keeps accepting,
refusing (queue full) and timing out requests while the model works. Requests of one batch that ask for different
score thresholds are run as one call per threshold, so every answer equals what the Python API gives for that
image and threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# (images, threshold) -> one result per image, in order; runs in the worker thread
RunBatch = Callable[[list[np.ndarray], float], list[Any]]


class QueueFull(Exception):
    """The bounded queue holds ``max_queue`` requests already."""


class ShuttingDown(Exception):
    """The service is closing: no new work is taken."""


@dataclass
class _Job:
    image: np.ndarray
    threshold: float
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Gathers submitted images into batches of at most ``max_batch_size``, waiting at most ``max_wait_s`` after
    the first for others, and runs each batch through ``run_batch`` on one worker thread.

    ``on_batch(size, seconds)`` is told of each backend call; ``depth()`` is the number of requests waiting.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int = 8,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda size, seconds: None)
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instaseg-model")
        self._task: asyncio.Task | None = None

    def depth(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="instaseg-batcher")

    async def submit(self, image: np.ndarray, threshold: float) -> Any:
        """The result for one image, once its batch has run. Raises QueueFull, ShuttingDown, or what the model
        raised; cancelling the wait (a timeout) drops the job if its batch has not started."""
        if self._closing:
            raise ShuttingDown
        if len(self._jobs) >= self.max_queue:
            raise QueueFull
        job = _Job(image, threshold, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        """Stop taking work, finish every queued job, stop the worker thread."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            batch = [self._jobs.popleft() for _ in range(min(self.max_batch_size, len(self._jobs)))]
            batch = [job for job in batch if not job.future.done()]  # timed out while queued
            if batch:
                await self._run(batch)

    async def _gather(self) -> None:
        """Wait up to ``max_wait_s`` after the first job for the batch to fill (not when closing)."""
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(self._jobs) < self.max_batch_size and not self._closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[float, list[_Job]] = {}
        for job in batch:
            groups.setdefault(job.threshold, []).append(job)
        for threshold, jobs in groups.items():
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run_batch, [job.image for job in jobs], threshold
                )
            except Exception as e:  # the model failed on this batch: every request of it gets the error
                logger.exception("a batch of %d image(s) failed", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.on_batch(len(jobs), time.perf_counter() - start)
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
