"""Batches the frames of a replica's concurrent sessions: one engine call for all that are
waiting when the engine becomes free.

Why not ``@serve.batch``: Ray Serve's batch queue forms the next batch as soon as its wait
elapses and then queues it behind the running one (its ``max_concurrent_batches`` semaphore is
taken after the batch is formed). When an engine call takes longer than the gap between frames
(any CPU replica, or many streams on a GPU), every frame that arrives during a call becomes a
batch of its own: measured with 4 streams of vox-256 on a CPU replica, 53 of 55 calls ran one
frame. Here the batch is formed when the engine is free: everything that arrived during the
previous call goes into the next one (up to ``max_batch``).

Before running fewer frames than there are active sessions, the batcher waits for the others'
next frames, at most ``wait_s`` or a quarter of the last call's time, whichever is longer (and
not at all when every active session has a frame waiting). Clients keep one frame in flight, so
without this wait two streams on a busy engine settle into alternating single-frame calls; with
it they fall into step and share calls, and the wait costs at most a quarter of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

#: A partial batch waits for the other sessions' frames up to this share of the last call.
PEER_WAIT_FRACTION = 0.25

J = TypeVar("J")
R = TypeVar("R")


class EngineTimeout(RuntimeError):
    """An engine call ran past the batcher's ``timeout_s``; the engine may be stuck."""


class FrameBatcher(Generic[J, R]):
    """``await submit(job)`` returns ``run([..., job, ...])``'s result for that job; ``run``
    (blocking) is called in a worker thread, one batch at a time.

    A call that takes longer than ``timeout_s`` fails its frames with :class:`EngineTimeout`;
    until that call returns (threads cannot be stopped) every new frame fails at once, and
    :meth:`healthy` says why, so the replica's health check can have Ray restart it. Whatever
    goes wrong, every waiting frame gets a result or an exception.
    """

    def __init__(
        self,
        run: Callable[[list[J]], list[R]],
        max_batch: int,
        wait_s: float,
        active: Callable[[], int] = lambda: 1 << 30,
        timeout_s: float | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run = run  # animates a list of jobs, returns one result per job
        self.max_batch = max_batch  # most jobs per call
        self.wait_s = wait_s  # shortest wait for more frames before a partial batch
        self.active = active  # sessions that may send a frame (default: unknown, many)
        self.timeout_s = timeout_s  # longest engine call; None: no limit
        self.last_call_s = 0.0  # duration of the latest engine call
        self.errors = 0  # engine calls that failed in a row
        self._pending: list[tuple[J, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._stuck_since: float | None = None  # monotonic start of a call past its timeout
        self._call: asyncio.Task | None = None  # the engine call in its worker thread

    def healthy(self) -> str | None:
        """None when the engine works; otherwise what is wrong."""
        if self._stuck_since is not None:
            return (
                f"an engine call has run for {time.monotonic() - self._stuck_since:.0f} s "
                f"(limit {self.timeout_s:g} s)"
            )
        return None

    async def submit(self, job: J) -> R:
        if self._stuck_since is not None:
            raise EngineTimeout(f"the engine is stuck: {self.healthy()}")
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        future: asyncio.Future = loop.create_future()
        self._pending.append((job, future))
        self._arrived.set()
        return await future

    async def _wait_for_more(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.wait_s, PEER_WAIT_FRACTION * self.last_call_s)
        while len(self._pending) < min(self.max_batch, self.active()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _work(self) -> None:
        try:
            await self._loop()
        finally:  # the worker ends (cancelled, or a bug): nobody waits forever
            pending, self._pending = self._pending, []
            _fail(pending, RuntimeError("the replica's frame batcher stopped"))

    async def _loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._pending) < min(self.max_batch, self.active()):
                await self._wait_for_more()
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            batch = [(job, future) for job, future in batch if not future.done()]  # cancelled
            if not batch:
                continue
            began = loop.time()
            jobs = [job for job, _ in batch]
            self._call = call = loop.create_task(asyncio.to_thread(self.run, jobs))
            try:
                try:
                    results = await asyncio.wait_for(asyncio.shield(call), self.timeout_s)
                except asyncio.TimeoutError:
                    self._stuck_since = time.monotonic() - (loop.time() - began)
                    raise EngineTimeout(f"an engine call took over {self.timeout_s:g} s") from None
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"the engine returned {len(results)} results for {len(batch)} frames"
                    )
            except Exception as exc:  # every frame of the batch gets the error
                self.errors += 1
                _fail(batch, exc)
                if self._stuck_since is not None:
                    # Frames waiting now fail at once; new ones fail in submit.
                    pending, self._pending = self._pending, []
                    _fail(pending, exc)
                    with contextlib.suppress(Exception):
                        await call  # the thread comes back (or the replica is restarted)
                    self._stuck_since = None
                continue
            finally:
                self.last_call_s = loop.time() - began
            self.errors = 0
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(batch: list[tuple[Any, asyncio.Future]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
