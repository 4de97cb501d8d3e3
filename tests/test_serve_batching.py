"""The dynamic batcher on its own: batch sizes, the wait for a batch to fill, thresholds kept apart, the bounded
queue, dropped timed-out jobs, errors reaching every caller, and a close that finishes what was queued."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from instaseg.deploy.serve.batching import Batcher, QueueFull, ShuttingDown


class Recorder:
    """A run_batch that records each call and answers each image with (its marker, the threshold)."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.calls: list[tuple[list[int], float]] = []
        self.gate = gate
        self.fail = fail
        self.entered = threading.Event()

    def __call__(self, images: list[np.ndarray], threshold: float) -> list:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(([int(im[0, 0, 0]) for im in images], threshold))
        if self.fail:
            raise RuntimeError("the model broke")
        return [(int(im[0, 0, 0]), threshold) for im in images]


def _image(marker: int) -> np.ndarray:
    return np.full((4, 4, 3), marker, dtype=np.uint8)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_requests_queued_together_share_calls_up_to_the_batch_size() -> None:
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch_size=4, max_wait_s=0.05, max_queue=16)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_image(i), 0.5) for i in range(6)))
        await batcher.close()
        return run, results

    run, results = _run(scenario())
    assert results == [(i, 0.5) for i in range(6)]  # each caller gets its own image's answer
    assert [len(markers) for markers, _ in run.calls] == [4, 2]


def test_a_batch_waits_for_late_requests_up_to_max_wait() -> None:
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch_size=8, max_wait_s=1.0, max_queue=16)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_image(1), 0.5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(_image(2), 0.5))
        await asyncio.gather(first, second)
        await batcher.close()
        return run

    assert _run(scenario()).calls == [([1, 2], 0.5)]


def test_no_batching_runs_one_request_per_call() -> None:
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch_size=1, max_wait_s=0.0, max_queue=16)
        batcher.start()
        await asyncio.gather(*(batcher.submit(_image(i), 0.5) for i in range(3)))
        await batcher.close()
        return run

    assert [markers for markers, _ in _run(scenario()).calls] == [[0], [1], [2]]


def test_thresholds_are_run_apart() -> None:
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch_size=8, max_wait_s=0.05, max_queue=16)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_image(i), t) for i, t in enumerate((0.5, 0.7, 0.5))))
        await batcher.close()
        return run, results

    run, results = _run(scenario())
    assert sorted(run.calls) == [([0, 2], 0.5), ([1], 0.7)]
    assert results == [(0, 0.5), (1, 0.7), (2, 0.5)]


def test_full_queue_refuses_and_timed_out_jobs_are_dropped() -> None:
    gate = threading.Event()

    async def scenario():
        run = Recorder(gate)
        batcher = Batcher(run, max_batch_size=1, max_wait_s=0.0, max_queue=2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(_image(0), 0.5))
        while not run.entered.is_set():  # the first job has left the queue: the model is busy with it
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.submit(_image(i), 0.5)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit(_image(3), 0.5)
        with pytest.raises(asyncio.TimeoutError):  # a caller that gives up: its job must not run
            await asyncio.wait_for(queued[0], 0.05)
        gate.set()
        await asyncio.gather(running, queued[1])
        await batcher.close()
        return run

    run = _run(scenario())
    assert [markers for markers, _ in run.calls] == [[0], [2]]


def test_a_failing_batch_reaches_its_callers_and_the_next_batch_runs() -> None:
    async def scenario():
        run = Recorder(fail=True)
        batcher = Batcher(run, max_batch_size=4, max_wait_s=0.01, max_queue=16)
        batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(_image(i), 0.5) for i in range(2)), return_exceptions=True)
        run.fail = False
        after = await batcher.submit(_image(9), 0.5)
        await batcher.close()
        return outcomes, after

    outcomes, after = _run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert after == (9, 0.5)


def test_close_finishes_queued_work_and_refuses_new() -> None:
    gate = threading.Event()

    async def scenario():
        run = Recorder(gate)
        batcher = Batcher(run, max_batch_size=2, max_wait_s=0.0, max_queue=16)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(_image(i), 0.5)) for i in range(5)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.05)
        with pytest.raises(ShuttingDown):
            await batcher.submit(_image(7), 0.5)
        gate.set()
        await closing
        return await asyncio.gather(*jobs)

    assert _run(scenario()) == [(i, 0.5) for i in range(5)]
