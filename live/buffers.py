"""Reusable image buffers with an owner: a pool hands a buffer to one holder at a time.

The per-frame path writes into buffers taken from a :class:`BufferPool` and gives each one
back when its last user is done with it. A buffer is never reused while it is held, however far
one thread runs ahead of another; the pool grows to the number of buffers in flight at once
and then stops allocating.
"""

from __future__ import annotations

import threading

import numpy as np


class BufferPool:
    """A thread-safe free list of arrays of one shape and dtype.

    :meth:`acquire` returns a free buffer (allocating one only when none is free);
    :meth:`release` gives it back. Asking for another shape (a camera reopened at a new
    resolution) starts over with that shape; buffers of the old shape are let go when
    released.
    """

    def __init__(self, shape: tuple[int, ...] | None = None, dtype: np.dtype | type = np.uint8):
        self._dtype = np.dtype(dtype)
        self._shape = shape  # shape of the buffers handed out; None until the first acquire
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []
        self._held: dict[int, np.ndarray] = {}  # id -> buffer, for buffers handed out
        self._allocated = 0

    @property
    def allocated(self) -> int:
        """Buffers allocated so far: the most in flight at once, not the frames processed."""
        with self._lock:
            return self._allocated

    @property
    def held(self) -> int:
        """Buffers handed out and not yet released."""
        with self._lock:
            return len(self._held)

    def acquire(self, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A buffer nobody else holds, of ``shape`` (default: the pool's shape); its contents
        are undefined."""
        with self._lock:
            if shape is not None and shape != self._shape:
                self._shape = tuple(shape)
                self._free.clear()
            if self._shape is None:
                raise RuntimeError("BufferPool.acquire() needs a shape for the first buffer")
            if self._free:
                buffer = self._free.pop()
            else:
                buffer = np.empty(self._shape, self._dtype)
                self._allocated += 1
            self._held[id(buffer)] = buffer
            return buffer

    def release(self, buffer: np.ndarray) -> None:
        """Give back a buffer from :meth:`acquire`; it must not be used afterwards."""
        with self._lock:
            if self._held.pop(id(buffer), None) is not buffer:
                raise RuntimeError("BufferPool.release() of a buffer this pool did not lend")
            if buffer.shape == self._shape:
                self._free.append(buffer)
