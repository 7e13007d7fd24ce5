"""A one-slot hand-off of items from one producer thread to one consumer thread.

Two modes: *newest wins* (a camera: an item not taken in time is replaced by the newer one
and counted as dropped, so latency never builds up) and *lossless* (a file processed frame by
frame: the producer waits until the consumer has taken the previous item).

The producer ends the stream with :meth:`Handoff.close` (optionally with the error that ended
it: the consumer gets the items already handed over, then the error). The consumer gives up
with :meth:`Handoff.cancel`: a waiting item is discarded and the producer's next
:meth:`Handoff.put` returns False. Items that are replaced or discarded go to ``on_drop``, so
that buffers they hold can go back to their pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """A one-slot hand-off between a producer and a consumer thread (see the module doc)."""

    def __init__(self, lossless: bool = False, on_drop: Callable[[T], None] | None = None):
        self.lossless = lossless  # producer waits for the consumer; False: newest item wins
        self._on_drop = on_drop  # receives each replaced or discarded item (outside the lock)
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False  # no more items will come, or the consumer has gone
        self._error: BaseException | None = None
        self._dropped = 0
        self._delivered = 0
        self._waiting = 0  # consumers blocked in get()

    @property
    def dropped(self) -> int:
        """Items replaced by a newer one before being taken (not those :meth:`cancel` discards)."""
        with self._cond:
            return self._dropped

    @property
    def delivered(self) -> int:
        """Items handed to the consumer."""
        with self._cond:
            return self._delivered

    @property
    def error(self) -> BaseException | None:
        """The error the producer ended the stream with, if any."""
        with self._cond:
            return self._error

    @property
    def waiting(self) -> bool:
        """True while the consumer waits in :meth:`get` and no item is there for it: the
        producer's next item is taken at once (one not waited for would go stale)."""
        with self._cond:
            return self._waiting > 0 and not self._has_item

    def wait_taken(self, timeout: float) -> bool:
        """Producer side: wait until no item waits to be taken (the consumer took the last
        one) or the stream ended; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._has_item and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def closed(self) -> bool:
        """True once the stream has ended (:meth:`close` or :meth:`cancel`)."""
        with self._cond:
            return self._closed

    @property
    def finished(self) -> bool:
        """True once the stream has ended and no item waits to be taken."""
        with self._cond:
            return self._closed and not self._has_item

    def put(self, item: T) -> bool:
        """Hand over an item (lossless: after the consumer has taken the previous one).

        Returns False, keeping the item with the caller, when the stream has ended or the
        consumer has gone.
        """
        with self._cond:
            while self.lossless and self._has_item and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            replaced, had_item = self._item, self._has_item
            if had_item:
                self._dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify_all()
        if had_item and self._on_drop is not None:
            self._on_drop(replaced)  # type: ignore[arg-type]
        return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; waits up to ``timeout`` seconds (``None``: until one comes).

        Returns None on timeout or at the end of the stream; once the stream has ended with
        an error and every item was taken, raises that error (on every call).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._has_item:
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
            item, self._item, self._has_item = self._item, None, False
            self._delivered += 1
            self._cond.notify_all()
            return item

    def close(self, error: BaseException | None = None) -> None:
        """End the stream (producer side); a waiting item is still delivered. ``error`` is
        raised to the consumer after that (the first error given wins)."""
        with self._cond:
            self._closed = True
            self._error = self._error or error
            self._cond.notify_all()

    def cancel(self) -> None:
        """Give up (consumer side): discard a waiting item and refuse further ones."""
        with self._cond:
            self._closed = True
            discarded, had_item = self._item, self._has_item
            self._item, self._has_item = None, False
            self._cond.notify_all()
        if had_item and self._on_drop is not None:
            self._on_drop(discarded)  # type: ignore[arg-type]
