"""Between the live loop and the control page: the loop hands frames over, the page reads JPEGs.

:class:`FrameBridge` is one of the loop's outputs (:class:`live.sinks.Output`). On the loop's
thread ``send`` only notes the status and stats, and while a browser watches copies the frame
into one of two slots (the one no reader holds): it never waits for the page and never
encodes. An encoder thread of its own composes the views (camera with crop box beside the
avatar; the avatar alone at the virtual camera's size for ``/obs``) and encodes the newest
frame as JPEG, only for the views a browser asked for in the last :data:`WATCH_SECONDS`; frames
that arrive while it encodes replace each other, so a slow browser costs drops on its side only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..framing import CropBox
from ..preview import compose_preview
from ..sinks import OutputFrame
from ..virtualcam import FitMode, fit_frame

#: A view is encoded while a browser asked for it this recently (seconds).
WATCH_SECONDS = 2.0
#: JPEG quality of the streamed views.
JPEG_QUALITY = 80
#: Height in pixels of the live view (camera and avatar side by side).
LIVE_VIEW_HEIGHT = 360
#: The views a browser can watch.
VIEWS = ("live", "obs")
#: Most frames per second encoded per view: the control page's live view is for looking at
#: yourself (a few frames less cost the loop's CPU nothing); /obs goes on stream at full rate.
MAX_VIEW_FPS = {"live": 15.0, "obs": 60.0}


@dataclass
class _Slot:
    """One frame as copied from the loop (the buffers belong to the bridge)."""

    image: np.ndarray | None = None  # R x R x 3 uint8 marked avatar frame
    camera: np.ndarray | None = None  # H x W x 3 uint8 camera view
    box: CropBox | None = None  # crop box in camera pixels
    status: str = ""  # the loop's status for this frame
    avatar: int = 0  # index of the avatar the frame was animated from
    seq: int = 0  # 1, 2, ... in the order the loop sent them
    sent: float = 0.0  # time.perf_counter() when the loop handed it over


def _copy_into(buffer: np.ndarray | None, source: np.ndarray | None) -> np.ndarray | None:
    """``source`` copied into ``buffer`` (reallocated only when the shape changed)."""
    if source is None:
        return None
    if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
        buffer = np.empty_like(source)
    np.copyto(buffer, source)
    return buffer


@dataclass(frozen=True)
class Encoded:
    """The newest JPEG of one view."""

    jpeg: bytes  # the encoded picture
    seq: int  # the loop frame it shows
    avatar: int  # the avatar that frame was animated from


@dataclass
class _Status:
    status: str = "starting"
    stats: dict[str, float] = field(default_factory=dict)
    frames: int = 0


class FrameBridge:
    """An output of the live loop that feeds the control page; see the module docstring.

    ``avatar_index`` is called on the loop's thread with each frame (the avatar shown);
    ``obs_size`` and ``fit`` are the virtual camera's frame size and fit mode.
    """

    def __init__(
        self,
        avatar_index: Callable[[], int],
        obs_size: tuple[int, int] = (1280, 720),
        fit: FitMode = "letterbox",
        clock: Callable[[], float] = time.monotonic,
    ):
        self._avatar_index = avatar_index
        self.obs_size = obs_size  # (width, height) of the /obs view
        self.fit = fit
        self._clock = clock
        self._lock = threading.Lock()  # guards the slots, the status and the wanted times
        self._slots = (_Slot(), _Slot())
        self._latest: int | None = None  # the slot written last
        self._reading: int | None = None  # the slot the encoder holds
        self._seq = 0
        self._status = _Status()
        self._wanted: dict[str, float] = {}  # view -> when a browser last asked for it
        self._new_frame = threading.Event()
        self._encoded: dict[str, Encoded] = {}
        self._encoded_changed = threading.Condition()
        self._closed = threading.Event()
        self.delay_ms: float | None = None  # moving average: frame sent -> its JPEG ready
        self._thread = threading.Thread(target=self._encode_loop, name="ui-encoder", daemon=True)
        self._thread.start()

    # --- the loop's thread ---------------------------------------------------------------

    def send(self, frame: OutputFrame) -> None:
        """Note the frame's status; copy it for the page only while a browser watches."""
        stats = dict(frame.stats)
        now = self._clock()
        with self._lock:
            status = self._status
            status.stats = stats
            if frame.kind != "new" or frame.image is None:
                return  # a refresh while no frame comes: the camera's status says why
            status.status = frame.status
            status.frames += 1
            if not any(now - t < WATCH_SECONDS for t in self._wanted.values()):
                return
            if self._reading is not None:
                target = 1 - self._reading
            else:
                target = 0 if self._latest is None else 1 - self._latest
            slot = self._slots[target]
            slot.image = _copy_into(slot.image, frame.image)
            slot.camera = _copy_into(slot.camera, frame.camera)
            slot.box, slot.status = frame.box, frame.status
            slot.avatar = self._avatar_index()
            self._seq += 1
            slot.seq = self._seq
            slot.sent = time.perf_counter()
            self._latest = target
        self._new_frame.set()

    def close(self) -> None:
        """Stop the encoder; streams waiting for a frame end."""
        self._closed.set()
        self._new_frame.set()
        with self._encoded_changed:
            self._encoded_changed.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- the page's threads --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def status(self) -> tuple[str, dict[str, float], int]:
        """The last frame's status, the loop's stats and the frames sent so far."""
        with self._lock:
            return self._status.status, dict(self._status.stats), self._status.frames

    def watch(self, view: str) -> None:
        """A browser wants ``view``: encode it for the next :data:`WATCH_SECONDS`."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        with self._lock:
            self._wanted[view] = self._clock()

    def next_jpeg(self, view: str, after: int, timeout: float) -> Encoded | None:
        """The newest JPEG of ``view`` newer than frame ``after``; None after ``timeout``
        seconds without one, or once the bridge is closed."""
        self.watch(view)
        deadline = time.monotonic() + timeout
        with self._encoded_changed:
            while not self.closed:
                found = self._encoded.get(view)
                if found is not None and found.seq > after:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._encoded_changed.wait(min(left, 0.5))
                self.watch(view)
        return None

    # --- the encoder thread --------------------------------------------------------------

    def _encode_loop(self) -> None:
        canvas: dict[str, np.ndarray] = {}
        bgr: dict[str, np.ndarray] = {}
        encoded_at: dict[str, float] = {}  # view -> when it was last encoded
        encoded_seq: dict[str, int] = {}  # view -> the frame it was last encoded from
        while not self.closed:
            if not self._new_frame.wait(timeout=0.5):
                continue
            self._new_frame.clear()
            now = self._clock()
            with self._lock:
                if self._latest is None:
                    continue
                latest = self._slots[self._latest].seq
                behind = [
                    v
                    for v, t in self._wanted.items()
                    if now - t < WATCH_SECONDS and encoded_seq.get(v, 0) < latest
                ]
                views = [v for v in behind if now - encoded_at.get(v, -1e9) >= 1 / MAX_VIEW_FPS[v]]
                if views:
                    self._reading = index = self._latest
            if not views:
                if behind:  # too soon for the rate cap: encode the newest frame then
                    wait = min(1 / MAX_VIEW_FPS[v] - (now - encoded_at[v]) for v in behind)
                    self._closed.wait(max(0.001, wait))
                    self._new_frame.set()
                continue
            try:
                slot = self._slots[index]
                done = {}
                for view in views:
                    picture = self._compose(view, slot, canvas.get(view))
                    if picture is None:
                        continue
                    canvas[view] = picture
                    out = bgr.get(view)
                    if out is None or out.shape != picture.shape:
                        out = bgr[view] = np.empty_like(picture)
                    cv2.cvtColor(picture, cv2.COLOR_RGB2BGR, dst=out)
                    ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                    if ok:
                        done[view] = Encoded(data.tobytes(), slot.seq, slot.avatar)
                        encoded_at[view], encoded_seq[view] = now, slot.seq
            finally:
                with self._lock:
                    self._reading = None
            if done:
                delay = (time.perf_counter() - slot.sent) * 1000
                previous = self.delay_ms
                self.delay_ms = delay if previous is None else 0.9 * previous + 0.1 * delay
            with self._encoded_changed:
                self._encoded.update(done)
                self._encoded_changed.notify_all()

    def _compose(self, view: str, slot: _Slot, out: np.ndarray | None) -> np.ndarray | None:
        if slot.image is None:
            return None
        if view == "obs":
            width, height = self.obs_size
            return fit_frame(slot.image, width, height, self.fit, out=out)
        if slot.camera is None:
            return slot.image
        return compose_preview(
            slot.camera,
            slot.image,
            slot.box,
            {},
            slot.status,
            show_stats=False,
            height=LIVE_VIEW_HEIGHT,
            out=out,
        )


def stats_for_page(stats: Mapping[str, float]) -> tuple[float | None, dict[str, float]]:
    """(fps, per-stage milliseconds) from the loop's stats."""
    stages = {
        k: round(v, 2)
        for k, v in stats.items()
        if k not in ("fps", "motion scale", "motion smoothing")
    }
    fps = stats.get("fps")
    return (None if fps is None else round(fps, 2)), stages
