"""The grabber: reads a frame source on its own thread and hands frames to one consumer,
the newest only (cameras) or every one in order (offline processing)."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2

from export.errors import UserError
from live.errors import SettingError
from live.handoff import Handoff
from live.resources import Closing
from live.sources import Frame, FrameSource

GrabMode = Literal["latest", "every", "paced"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a grabber waits between attempts to reopen a lost camera."""

    initial_delay: float = 0.5  # seconds before the first attempt
    factor: float = 2.0  # each further wait is this many times longer
    max_delay: float = 5.0  # longest wait between two attempts, in seconds

    def __post_init__(self) -> None:
        if not (self.initial_delay >= 0 and self.factor >= 1 and self.max_delay >= 0):
            raise SettingError(
                f"Invalid camera retry policy {self}: expected initial_delay >= 0, "
                "factor >= 1 and max_delay >= 0."
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 for the first)."""
        return min(self.max_delay, self.initial_delay * self.factor ** max(attempt - 1, 0))


class LatestFrameGrabber(Closing):
    """Reads a :class:`FrameSource` on a daemon thread and hands frames to one consumer.

    Modes: ``"latest"`` keeps only the newest frame (stale ones are dropped and counted);
    ``"every"`` hands over every frame in order, the reader waiting for the consumer;
    ``"paced"`` releases a file's frames at its FPS (or ``fps``) like a camera, newest only.
    A live source that fails is closed and reopened with backoff until :meth:`stop`.
    """

    def __init__(
        self,
        source: FrameSource,
        mode: GrabMode = "latest",
        *,
        fps: float | None = None,
        retry: RetryPolicy | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in ("latest", "every", "paced"):
            raise SettingError(
                f"Unknown grab mode {mode!r}: expected 'latest', 'every' or 'paced'."
            )
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise SettingError(f"Invalid pacing rate {fps} fps: expected a number > 0.")
        self._source = source
        self._mode: GrabMode = mode
        self._pace_fps = fps
        self._retry = retry or RetryPolicy()
        self._on_status = on_status
        self._handoff: Handoff[Frame] = Handoff(lossless=mode == "every")  # reader -> consumer
        self._lock = threading.Lock()  # guards the status, the thread and the interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = "not started"
        self._interval: float | None = None  # smoothed seconds between frames read

    @property
    def source(self) -> FrameSource:
        """The source being read."""
        return self._source

    @property
    def mode(self) -> GrabMode:
        """The hand-over mode."""
        return self._mode

    @property
    def dropped(self) -> int:
        """Frames that were replaced by a newer one before the consumer took them."""
        return self._handoff.dropped

    @property
    def delivered(self) -> int:
        """Frames handed to the consumer."""
        return self._handoff.delivered

    @property
    def status(self) -> str:
        """Short state for the user: "ok", "camera lost, retrying (attempt 3)", "end of input"."""
        with self._lock:
            return self._status

    @property
    def measured_fps(self) -> float | None:
        """Frames per second actually read from the source (smoothed), None before two."""
        with self._lock:
            interval = self._interval
        return 1.0 / interval if interval else None

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the reader thread, if any."""
        return self._handoff.error

    @property
    def finished(self) -> bool:
        """True once the reader has ended (input over, stopped or failed) and no frame waits."""
        with self._lock:
            started = self._thread is not None
        return started and self._handoff.finished

    def _set_status(self, status: str) -> None:
        with self._lock:
            if status == self._status:
                return
            self._status = status
        if self._on_status is not None:
            self._on_status(status)

    def start(self) -> LatestFrameGrabber:
        """Start the reader thread; returns self."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("LatestFrameGrabber.start() called twice")
            self._thread = threading.Thread(
                target=self._run, name=f"capture {self._source.name}", daemon=True
            )
        self._set_status("ok")
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """Block until a frame newer than the last one handed over arrives.

        Returns ``None`` on timeout or when the reader has finished; re-raises the error that
        stopped the reader (e.g. an unreadable image in a folder).
        """
        with self._lock:
            if self._thread is None:
                raise RuntimeError("LatestFrameGrabber.get() before start()")
        return self._handoff.get(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the reader, release the source and drop any waiting frame (waits ``timeout`` s)."""
        self._stop.set()
        self._handoff.cancel()  # drops a waiting frame and wakes a reader waiting to hand over
        with self._lock:
            thread = self._thread
        if thread is None:
            self._source.close()
            self._set_status("stopped")
            return
        if thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> LatestFrameGrabber:
        if self._thread is None:
            self.start()
        return self

    def _reconnect(self) -> bool:
        """Reopen a lost live source with backoff; False when stopped first."""
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._set_status(f"camera lost, retrying (attempt {attempt})")
            if self._stop.wait(self._retry.delay(attempt)):
                return False
            try:
                self._source.reopen()
            except (UserError, OSError, RuntimeError, cv2.error):
                continue
            self._set_status("ok")
            return True
        return False

    def _run(self) -> None:
        source = self._source
        period = 0.0
        if self._mode == "paced":
            period = 1.0 / (self._pace_fps or source.fps or 25.0)
        due = time.perf_counter()
        previous: float | None = None
        final_status = "stopped"
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                try:
                    frame = source.read()
                except (UserError, OSError, RuntimeError, cv2.error):
                    if not source.is_live:
                        raise
                    frame = None
                if frame is None:
                    if not source.is_live:
                        final_status = "end of input"
                        break
                    if not self._reconnect():
                        break
                    previous = None
                    continue
                if period:
                    now = time.perf_counter()
                    if due > now and self._stop.wait(due - now):
                        break
                    due = max(due + period, time.perf_counter() - period)
                    frame = dataclasses.replace(frame, timestamp=time.perf_counter())
                if previous is not None and frame.timestamp > previous:
                    step = frame.timestamp - previous
                    with self._lock:
                        self._interval = (
                            step if self._interval is None else 0.9 * self._interval + 0.1 * step
                        )
                previous = frame.timestamp
                if not self._handoff.put(frame):  # the consumer has stopped
                    break
        except BaseException as exc:  # handed to the consumer by get()
            error = exc
            final_status = f"error: {exc}".splitlines()[0]
        finally:
            try:
                source.close()
            finally:
                self._set_status(final_status)
                self._handoff.close(error)
