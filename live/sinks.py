"""One small output interface for everything the live loop feeds: ``send`` and ``close``.

In the spirit of pyvirtualcam's ``Camera.send``: the loop hands each output an
:class:`OutputFrame` (the marked avatar frame, its presentation time and what the preview
draws beside it) and knows nothing else about files, virtual cameras or windows. An output
that needs the camera view, the crop box or the status (the preview) reads them from the
frame; the others ignore them.

The outputs here wrap objects whose lifetime the caller manages (:func:`live.app.run` opens
and closes them on its exit stack); their ``close`` is safe to call twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from .controls import Action, action_for_key
from .framing import CropBox
from .outputs import FrameSink
from .preview import PreviewWindow
from .virtualcam import VirtualCamera

log = logging.getLogger("avatarcam")

FrameKind = Literal["new", "refresh", "end"]


@dataclass(frozen=True)
class OutputFrame:
    """One frame for the outputs."""

    image: np.ndarray | None  # R x R x 3 uint8 marked avatar frame; None before the first
    pts: float  # presentation time in seconds (the capture clock; files: their own clock)
    kind: FrameKind = "new"  # new frame; refresh of the last one (no new input); end of input
    camera: np.ndarray | None = None  # the camera view as shown (mirrored when asked)
    box: CropBox | None = None  # the driving crop in camera pixels
    status: str = ""  # what the loop is doing, for the preview
    stats: Mapping[str, float] = field(default_factory=dict)  # fps and stage times


class Output(Protocol):
    """Something the loop sends frames to."""

    def send(self, frame: OutputFrame) -> None: ...
    def close(self) -> None: ...


class FileOutput:
    """A file sink (video or PNG folder): new frames, placed by their presentation time; at
    the end of the input a timed video holds the last frame until the input's end."""

    def __init__(self, sink: FrameSink):
        self.sink = sink

    def send(self, frame: OutputFrame) -> None:
        if frame.image is None:
            return
        if frame.kind == "new":
            self.sink.send(frame.image, frame.pts)
        elif frame.kind == "end":
            finish = getattr(self.sink, "finish", None)
            if finish is not None:
                finish(frame.pts)

    def close(self) -> None:
        self.sink.close()


class VirtualCameraOutput:
    """The virtual camera: every new frame, and the last one again while no new frame comes
    (at the camera's rate), so video-call apps never see it stall."""

    def __init__(self, camera: VirtualCamera, clock: Callable[[], float] = time.perf_counter):
        self.camera = camera
        self._clock = clock
        self._last_sent = float("-inf")

    def send(self, frame: OutputFrame) -> None:
        if frame.image is None or frame.kind == "end":
            return
        now = self._clock()
        if frame.kind == "refresh" and now - self._last_sent < 1 / self.camera.fps:
            return
        self.camera.send(frame.image)
        self._last_sent = now

    def close(self) -> None:
        self.camera.close()


class PreviewOutput:
    """The preview window: draws each frame beside the camera view, and hands the keys
    pressed in it to ``post`` as actions (``Action.QUIT`` when the window is closed)."""

    def __init__(self, window: PreviewWindow, post: Callable[[Action, object], None]):
        self.window = window
        self._post = post

    def send(self, frame: OutputFrame) -> None:
        if frame.camera is None or frame.kind == "end":
            return
        key = self.window.show(frame.camera, frame.image, frame.box, frame.stats, frame.status)
        if self.window.closed:
            log.info("preview window closed: quitting")
            self._post(Action.QUIT, None)
        elif key is not None:
            found = action_for_key(key)
            if found is not None:
                self._post(*found)

    def close(self) -> None:
        self.window.close()
