"""The replica's batcher: frames that arrive while the engine runs go into the next call."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engines.serve.batcher import EngineTimeout, FrameBatcher


class SlowEngine:
    """Records the batch sizes it ran; each call takes ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.sizes: list[int] = []
        self.threads: set[int] = set()

    def __call__(self, jobs: list[int]) -> list[int]:
        self.sizes.append(len(jobs))
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        return [job * 10 for job in jobs]


def test_frames_arriving_during_a_call_form_the_next_batch() -> None:
    engine = SlowEngine(0.3)
    batcher = FrameBatcher(engine, max_batch=4, wait_s=0.002)

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.1)  # the engine is busy with frame 1
        rest = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3, 4, 5, 6)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(scenario()) == [10, 20, 30, 40, 50, 60]
    assert engine.sizes == [1, 4, 1]  # at most max_batch per call, nothing left behind
    assert threading.get_ident() not in engine.threads  # the event loop never blocks


def test_an_idle_engine_waits_briefly_for_company() -> None:
    engine = SlowEngine(0.0)
    batcher = FrameBatcher(engine, max_batch=8, wait_s=0.2)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit(2))

    began = time.perf_counter()
    asyncio.run(scenario())
    assert engine.sizes == [2]
    assert time.perf_counter() - began < 1.0


def test_an_engine_error_reaches_every_frame_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def engine(jobs: list[int]) -> list[int]:
        calls.append(list(jobs))
        if 0 in jobs:
            raise RuntimeError("engine failed")
        return jobs

    batcher = FrameBatcher(engine, max_batch=2, wait_s=0.05)

    async def scenario() -> int:
        results = await asyncio.gather(batcher.submit(0), batcher.submit(7), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        return await batcher.submit(3)

    assert asyncio.run(scenario()) == 3
    assert calls == [[0, 7], [3]]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        FrameBatcher(lambda jobs: jobs, max_batch=0, wait_s=0)


def test_closed_loop_streams_fall_into_step_and_share_calls() -> None:
    """Two clients with one frame in flight each, on a busy engine: without waiting for the
    other session they would alternate single-frame calls forever."""
    engine = SlowEngine(0.1)
    batcher = FrameBatcher(engine, max_batch=4, wait_s=0.002, active=lambda: 2)

    async def client(first: int) -> None:
        for n in range(first, first + 6):
            await batcher.submit(n)
            await asyncio.sleep(0.005)  # the round trip to the client and back

    async def scenario() -> None:
        one = asyncio.ensure_future(client(0))
        await asyncio.sleep(0.03)  # the second stream starts out of step
        await asyncio.gather(one, client(100))

    asyncio.run(scenario())
    assert sum(engine.sizes) == 12
    assert engine.sizes.count(2) >= 4, engine.sizes


def test_a_lone_session_never_waits() -> None:
    engine = SlowEngine(0.0)
    batcher = FrameBatcher(engine, max_batch=4, wait_s=5.0, active=lambda: 1)
    began = time.perf_counter()
    assert asyncio.run(batcher.submit(4)) == 40
    assert time.perf_counter() - began < 1.0


def test_a_wrong_number_of_results_fails_every_frame_of_the_batch() -> None:
    batcher = FrameBatcher(lambda jobs: jobs[:-1], max_batch=3, wait_s=0.05)

    async def scenario() -> list:
        jobs = [batcher.submit(n) for n in (1, 2, 3)]
        return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 5)

    results = asyncio.run(scenario())
    assert len(results) == 3 and all(isinstance(r, RuntimeError) for r in results), results
    assert batcher.errors == 1


def test_a_stuck_engine_call_times_out_and_marks_the_batcher_unhealthy() -> None:
    release = threading.Event()

    def engine(jobs: list[int]) -> list[int]:
        if 0 in jobs:
            release.wait(10)  # a hung call
        return jobs

    batcher = FrameBatcher(engine, max_batch=1, wait_s=0.0, timeout_s=0.2)

    async def scenario() -> tuple[list, str | None, int]:
        stuck = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit(5))  # waits behind the stuck call
        results = await asyncio.wait_for(asyncio.gather(stuck, queued, return_exceptions=True), 5)
        health = batcher.healthy()
        with pytest.raises(EngineTimeout):  # new frames fail at once while it is stuck
            await asyncio.wait_for(batcher.submit(6), 1)
        release.set()
        for _ in range(100):
            if batcher.healthy() is None:
                break
            await asyncio.sleep(0.02)
        return results, health, await asyncio.wait_for(batcher.submit(7), 5)

    results, health, after = asyncio.run(scenario())
    assert all(isinstance(r, EngineTimeout) for r in results), results
    assert health is not None and "limit 0.2 s" in health
    assert after == 7 and batcher.healthy() is None  # back once the call returned
