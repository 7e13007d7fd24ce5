"""The grabber: reads a frame source on its own thread and hands frames to one consumer,
the newest only (``live`` and ``paced`` timing) or every one in order (``offline``)."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from export.errors import UserError
from live.errors import SettingError
from live.handoff import Handoff
from live.resources import Closing
from live.sources import DEFAULT_FPS, Frame, FrameSource
from live.timing import TIMING_MODES, TimingMode, drops_frames


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

    Modes (:mod:`live.timing`): ``"live"`` keeps only the newest frame (stale ones are dropped
    and counted); ``"offline"`` hands over every frame in order, the reader waiting for the
    consumer; ``"paced"`` releases a file's frames at its FPS (or ``fps``) like a camera, newest
    only, stamped with the time of release. A live source that fails is closed and reopened
    with backoff until :meth:`stop`; the status then says why (the exception's text).
    """

    def __init__(
        self,
        source: FrameSource,
        mode: TimingMode = "live",
        *,
        fps: float | None = None,
        retry: RetryPolicy | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in TIMING_MODES:
            raise SettingError(
                f"Unknown timing mode {mode!r}: expected one of {', '.join(TIMING_MODES)}."
            )
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise SettingError(f"Invalid pacing rate {fps} fps: expected a number > 0.")
        self._source = source
        self._mode: TimingMode = mode
        self._pace_fps = fps
        self._retry = retry or RetryPolicy()
        self._on_status = on_status
        # reader -> consumer
        self._handoff: Handoff[Frame] = Handoff(lossless=not drops_frames(mode))
        self._lock = threading.Lock()  # guards the status, the thread and the interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = "not started"
        self._interval: float | None = None  # smoothed seconds between frames read
        self._last_pts: float | None = None  # presentation time of the last frame read
        # live and paced: a frame is decoded only when the consumer waits for one
        self._lossy = drops_frames(mode)
        self._skipped = 0  # frames grabbed and never decoded (nobody waited for them)

    @property
    def source(self) -> FrameSource:
        """The source being read."""
        return self._source

    @property
    def mode(self) -> TimingMode:
        """The timing mode."""
        return self._mode

    @property
    def last_pts(self) -> float | None:
        """Presentation time of the last frame read from the source (delivered or dropped):
        where a recording of the whole input ends."""
        with self._lock:
            return self._last_pts

    @property
    def dropped(self) -> int:
        """Frames the consumer never got: grabbed while it was busy (so never decoded), or
        replaced by a newer one before it took them."""
        with self._lock:
            skipped = self._skipped
        return skipped + self._handoff.dropped

    @property
    def skipped(self) -> int:
        """Frames grabbed while the consumer was busy, and never decoded."""
        with self._lock:
            return self._skipped

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

    def _reconnect(self, reason: str) -> bool:
        """Reopen a lost live source with backoff; False when stopped first. ``reason`` (": "
        and the error's text, or empty) is shown until a reopen fails with another one."""
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._set_status(f"camera lost, retrying (attempt {attempt}){reason}")
            if self._stop.wait(self._retry.delay(attempt)):
                return False
            try:
                self._source.reopen()
            except (UserError, OSError, RuntimeError, cv2.error) as exc:
                reason = _reason(exc)
                continue
            self._set_status("ok")
            return True
        return False

    def _count_interval(self, timestamp: float, previous: float | None) -> None:
        if previous is not None and timestamp > previous:
            step = timestamp - previous
            with self._lock:
                self._interval = (
                    step if self._interval is None else 0.9 * self._interval + 0.1 * step
                )

    def _run(self) -> None:
        source = self._source
        period = 0.0
        if self._mode == "paced":
            period = 1.0 / (self._pace_fps or source.fps or DEFAULT_FPS)
        due = time.perf_counter()
        origin: float | None = None  # release time of the first paced frame
        previous: float | None = None
        final_status = "stopped"
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                reason = ""
                try:
                    grabbed = source.grab()
                except (UserError, OSError, RuntimeError, cv2.error) as exc:
                    if not source.is_live:
                        raise
                    grabbed, reason = False, _reason(exc)
                frame = None
                if grabbed and period:
                    now = time.perf_counter()
                    if due > now and self._stop.wait(due - now):
                        break
                    due = max(due + period, time.perf_counter() - period)
                    released = time.perf_counter()
                    origin = released if origin is None else origin
                    stamps: tuple[float, float] = (released, released - origin)
                elif grabbed:
                    _, captured, pts = source.grabbed or (0, time.perf_counter(), 0.0)
                    stamps = (captured, pts)
                if grabbed:
                    self._count_interval(stamps[0], previous)
                    previous = stamps[0]
                    with self._lock:
                        self._last_pts = stamps[1]
                    if self._lossy and self._handoff.delivered and not self._handoff.waiting:
                        # Nobody waits for it: by the time the consumer asks, a newer frame
                        # is there. Grabbed, not decoded (the first frame always is).
                        with self._lock:
                            self._skipped += 1
                        continue
                    try:
                        frame = source.retrieve()
                    except (UserError, OSError, RuntimeError, cv2.error) as exc:
                        if not source.is_live:
                            raise
                        reason = _reason(exc)
                if frame is None:
                    if not source.is_live:
                        final_status = "end of input"
                        break
                    if not self._reconnect(reason):
                        break
                    previous = None
                    continue
                if period:
                    frame = dataclasses.replace(frame, timestamp=stamps[0], pts=stamps[1])
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


def _reason(exc: BaseException) -> str:
    """ ": " and the first line of an error's text (empty when it has none)."""
    text = str(exc).strip().splitlines()
    return f": {text[0]}" if text else f": {type(exc).__name__}"
