"""Tests for live.buffers: a buffer is lent to one holder at a time and reused after."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from live.buffers import BufferPool


def test_a_held_buffer_is_never_handed_out_again() -> None:
    pool = BufferPool((4, 4, 3))
    first, second = pool.acquire(), pool.acquire()
    assert first is not second and not np.shares_memory(first, second)
    assert first.shape == (4, 4, 3) and first.dtype == np.uint8
    assert (pool.allocated, pool.held) == (2, 2)
    pool.release(first)
    assert pool.acquire() is first  # reused, not allocated
    assert pool.allocated == 2


def test_steady_state_allocates_nothing() -> None:
    pool = BufferPool((2, 2), np.float32)
    in_flight: list[np.ndarray] = []
    for _ in range(100):  # three in flight at once, like the live loop's stages
        in_flight.append(pool.acquire())
        if len(in_flight) == 3:
            pool.release(in_flight.pop(0))
    assert pool.allocated == 3
    assert in_flight[0].dtype == np.float32


def test_releasing_twice_or_a_foreign_buffer_is_an_error() -> None:
    pool = BufferPool((2, 2))
    buffer = pool.acquire()
    pool.release(buffer)
    with pytest.raises(RuntimeError, match="did not lend"):
        pool.release(buffer)
    with pytest.raises(RuntimeError, match="did not lend"):
        pool.release(np.empty((2, 2), np.uint8))


def test_a_new_shape_starts_over() -> None:
    pool = BufferPool()
    with pytest.raises(RuntimeError, match="needs a shape"):
        pool.acquire()
    small = pool.acquire((2, 2, 3))
    pool.release(small)
    large = pool.acquire((4, 4, 3))  # e.g. a camera reopened at another resolution
    assert large.shape == (4, 4, 3) and large is not small
    pool.release(large)
    assert pool.acquire() is large  # the default shape is now the new one


def test_old_shape_buffers_released_late_are_let_go() -> None:
    pool = BufferPool((2, 2, 3))
    old = pool.acquire()
    new = pool.acquire((3, 3, 3))
    pool.release(old)  # not reused for the new shape
    assert pool.acquire() is not old
    pool.release(new)
    assert pool.held == 1


def test_threads_never_share_a_buffer() -> None:
    pool = BufferPool((1,), np.int64)
    errors: list[str] = []

    def worker(tag: int) -> None:
        for _ in range(2000):
            buffer = pool.acquire()
            buffer[0] = tag
            time.sleep(0)  # let the other threads run while this one holds the buffer
            if buffer[0] != tag:
                errors.append("shared")
            pool.release(buffer)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and pool.held == 0 and pool.allocated <= 4
