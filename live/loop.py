"""The per-frame loop: capture -> face framing -> animation -> outputs, pipelined.

Three stages overlap: the capture thread (:class:`~live.grabber.LatestFrameGrabber`) reads the
camera, the framing thread finds the face and cuts the crop, and the calling thread animates
and sends the frame to the outputs (and runs the preview window, which must live on it). Each
stage hands the next one only its newest item: with a camera, a slow stage makes the others
drop stale frames instead of queueing them, so latency never builds up. With a file input every
frame is processed in order (nothing is dropped) unless real-time pacing is asked for.

Stages hand over through :class:`~live.handoff.Handoff`. The mirrored camera image and the crop
of a frame live in pooled buffers (:class:`~live.buffers.BufferPool`) that the frame holds until
it is dropped or the next frame has been shown: a fast camera never overwrites the frame being
animated or shown, and the pools stop growing at the few frames in flight.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from engines.errors import EngineUnavailable

from .animator import Animator, normalized_keypoints
from .buffers import BufferPool
from .controls import Action
from .framing import CropBox
from .grabber import LatestFrameGrabber
from .handoff import Handoff
from .outputs import FrameSink
from .pipeline import Crop, Cropper, PreparedAvatar
from .preview import PreviewWindow
from .sources import Frame
from .virtualcam import VirtualCamera

log = logging.getLogger("avatarcam")


@dataclass(frozen=True)
class LoopOptions:
    """Behaviour of the live loop."""

    mirror: bool = False  # flip the camera image horizontally (a selfie view)
    best_frame: bool = False  # start in best-frame calibration mode
    no_face: Literal["hold", "rest"] = "hold"  # without a face: last frame, or avatar at rest
    lossless: bool = False  # hand every frame through every stage (files); False: newest only
    show_stats: bool = True  # FPS and latency overlay in the preview
    overlay: bool = False  # avatar overlay on the camera view, to line the face up


@dataclass(frozen=True)
class FrameRecord:
    """What happened to one frame (for tests, logs and the benchmarks)."""

    index: int  # frame index in the source
    status: str  # "animated", "paused", "no face", ...
    crop_status: str  # the framing stage's status: resize, tracking, holding, lost
    box: CropBox | None  # crop box in camera pixels
    face: object | None  # face box found in this frame (live.face.FaceBox), if any
    avatar: int  # index of the avatar shown
    latency_ms: float  # capture -> frame sent to the outputs
    stages_ms: dict[str, float] = field(default_factory=dict)  # per-stage durations


@dataclass(frozen=True)
class _Job:
    """One framed camera frame on its way to the engine; it holds its pooled buffers until the
    loop releases it (when it is dropped, or replaced as the last frame shown)."""

    frame: Frame  # as captured
    camera: np.ndarray  # the camera image as shown (mirrored when asked)
    crop: Crop  # the driving crop
    face: object | None  # the face found
    framing_ms: float  # face detection + crop time
    mirror_buffer: np.ndarray | None  # from the loop's camera pool (camera is it), if mirrored
    crop_buffer: np.ndarray | None  # from the loop's crop pool (crop.image is it), if a crop


class _Stats:
    """Exponential moving averages of stage times and the output frame rate."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self._times: list[float] = []

    def add(self, name: str, value: float) -> None:
        previous = self.values.get(name)
        self.values[name] = value if previous is None else 0.9 * previous + 0.1 * value

    def tick(self, now: float) -> None:
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > 1.0:
            self._times.pop(0)
        if len(self._times) > 1:
            self.values["fps"] = (len(self._times) - 1) / (self._times[-1] - self._times[0])


class LiveLoop:
    """Runs the stages until the input ends, the user quits, or :meth:`stop` is called."""

    def __init__(
        self,
        grabber: LatestFrameGrabber,
        cropper: Cropper,
        animator: Animator,
        avatars: list[PreparedAvatar],
        options: LoopOptions = LoopOptions(),
        *,
        sinks: list[FrameSink] | None = None,
        media_fps: float | None = None,
        virtual_camera: VirtualCamera | None = None,
        preview: PreviewWindow | None = None,
        on_frame: Callable[[FrameRecord, LiveLoop], None] | None = None,
        marker: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        if not avatars:
            raise ValueError("LiveLoop needs at least one avatar")
        self.grabber = grabber  # capture stage, started by run()
        self.cropper = cropper  # framing stage
        self.animator = animator  # engine and motion state
        self.avatars = avatars  # framed avatar photos
        self.options = options
        self.sinks = sinks or []  # file outputs
        # Frame rate of a file processed frame by frame: the face tracker then runs on media
        # time (index / fps) rather than on how fast frames happen to be processed.
        self.media_fps = media_fps
        self.virtual_camera = virtual_camera
        self.preview = preview
        self.on_frame = on_frame  # called after each frame (tests, logging)
        # Marks each animated frame as synthetic (live.marking.FrameMarker) before any output
        # sees it; its time is the "watermark" stage.
        self.marker = marker
        self.avatar_index = 0
        self.mirror = options.mirror
        self.best_frame = options.best_frame
        self.paused = False
        self.frames_out = 0
        self._actions: queue.SimpleQueue[tuple[Action, int | None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stats = _Stats()
        size = animator.resolution
        # Buffers owned by one job at a time: a job holds its mirrored camera image and crop
        # from framing until it is dropped or the next frame has been shown, so the camera
        # stage can run ahead of the engine without overwriting what is being animated.
        self._mirrors = BufferPool()
        self._crops = BufferPool((size, size, 3))
        self._handoff: Handoff[_Job] = Handoff(options.lossless, on_drop=self._release)
        self._last_job: _Job | None = None  # the frame shown last, kept for idle refreshes
        self._best_distance = float("inf")
        self._avatar_norm: np.ndarray | None = None
        self._last_output: np.ndarray | None = None
        self._last_marked: np.ndarray | None = None  # the last frame as the outputs got it
        self._last_status = ""
        self._last_sent = 0.0
        self._out = np.empty((size, size, 3), np.uint8)

    # --- control -----------------------------------------------------------------------------

    def post(self, action: Action, index: int | None = None) -> None:
        """Ask for an action (thread-safe); applied before the next frame."""
        self._actions.put((action, index))

    def stop(self) -> None:
        self._stop.set()

    def select_avatar(self, index: int) -> None:
        if not 0 <= index < len(self.avatars):
            log.info("there is no avatar %d (%d loaded)", index + 1, len(self.avatars))
            return
        self.avatar_index = index
        avatar = self.avatars[index]
        self.animator.set_avatar(avatar.image)
        self._avatar_norm = normalized_keypoints(self.animator.avatar_keypoints.value)
        if self.best_frame:
            self._restart_best_frame()
        log.info("avatar %d/%d: %s", index + 1, len(self.avatars), avatar.name)

    def _restart_best_frame(self) -> None:
        self._best_distance = float("inf")
        self.animator.reset_calibration()

    def _apply(self, action: Action, index: int | None) -> None:
        try:
            self._apply_action(action, index)
        except EngineUnavailable as exc:
            log.warning("could not apply %s now: %s", action.name.lower(), exc)

    def _apply_action(self, action: Action, index: int | None) -> None:
        if action is Action.QUIT:
            self._stop.set()
        elif action is Action.NEXT_AVATAR:
            self.select_avatar((self.avatar_index + 1) % len(self.avatars))
        elif action is Action.PREV_AVATAR:
            self.select_avatar((self.avatar_index - 1) % len(self.avatars))
        elif action is Action.SELECT_AVATAR and index is not None:
            self.select_avatar(index)
        elif action is Action.RECALIBRATE:
            self._restart_best_frame()
            log.info("recalibrating: the next frame with a face is the new reference")
        elif action is Action.TOGGLE_BEST_FRAME:
            self.best_frame = not self.best_frame
            self._restart_best_frame()
            log.info("best-frame mode %s", "on" if self.best_frame else "off")
        elif action is Action.TOGGLE_MIRROR:
            self.mirror = not self.mirror
        elif action is Action.TOGGLE_OVERLAY and self.preview is not None:
            self.preview.overlay = not self.preview.overlay
        elif action is Action.TOGGLE_STATS and self.preview is not None:
            self.preview.show_stats = not self.preview.show_stats
        elif action is Action.TOGGLE_PAUSE:
            self.paused = not self.paused
            log.info("paused" if self.paused else "resumed")

    # --- framing thread ------------------------------------------------------------------------

    def _release(self, job: _Job) -> None:
        """Return a job's buffers to their pools; the job must not be used afterwards."""
        if job.mirror_buffer is not None:
            self._mirrors.release(job.mirror_buffer)
        if job.crop_buffer is not None:
            self._crops.release(job.crop_buffer)

    def _frame_job(self, frame: Frame) -> _Job:
        """Mirror (when asked) and crop one camera frame into buffers the job holds."""
        start = time.perf_counter()
        mirror_buffer = None
        camera = frame.image
        if self.mirror:
            mirror_buffer = self._mirrors.acquire(frame.image.shape)
            camera = cv2.flip(frame.image, 1, dst=mirror_buffer)
        clock = frame.index / self.media_fps if self.media_fps else frame.timestamp
        crop_buffer: np.ndarray | None = self._crops.acquire()
        crop = self.cropper(camera, clock, crop_buffer)
        if crop.image is None:
            self._crops.release(crop_buffer)
            crop_buffer = None
        face = getattr(self.cropper, "last_face", None)
        framing_ms = (time.perf_counter() - start) * 1000
        return _Job(frame, camera, crop, face, framing_ms, mirror_buffer, crop_buffer)

    def _framing(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.grabber.get(timeout=0.1)
                if frame is None:
                    if self.grabber.finished:
                        break
                    continue
                job = self._frame_job(frame)
                if not self._handoff.put(job):
                    self._release(job)
                    break
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._handoff.close(exc)
        else:
            self._handoff.close()

    # --- main thread ---------------------------------------------------------------------------

    def _animate(self, job: _Job) -> tuple[np.ndarray, str]:
        if self.paused:
            return self.animator.rest_image, "paused: showing the avatar at rest"
        if job.crop.image is None:
            if self.options.no_face == "hold" and self._last_output is not None:
                return self._last_output, "no face: holding the last frame"
            return self.animator.rest_image, "no face: showing the avatar at rest"
        try:
            animated = self.animator.animate(job.crop.image, self._out)
        except EngineUnavailable as exc:  # a remote server reconnecting: keep the loop alive
            held = self._last_output
            return (held if held is not None else self.animator.rest_image), f"engine: {exc}"
        if self.best_frame and self._avatar_norm is not None:
            distance = float(
                np.sum((normalized_keypoints(animated.keypoints.value) - self._avatar_norm) ** 2)
            )
            if distance < self._best_distance:
                self._best_distance = distance
                self.animator.calibrate(animated.keypoints)
        self._last_output = animated.image
        status = "holding the last face position" if job.crop.status == "holding" else "ok"
        return animated.image, status

    def _send(self, image: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(image)
        if self.virtual_camera is not None:
            self.virtual_camera.send(image)
            self._last_sent = time.perf_counter()

    def _show(self, camera: np.ndarray | None, image: np.ndarray | None, box, status: str) -> None:
        if self.preview is None or camera is None:
            return
        key = self.preview.show(camera, image, box, self._stats.values, status)
        if self.preview.closed:
            log.info("preview window closed: quitting")
            self._stop.set()
        elif key is not None:
            from .controls import action_for_key

            found = action_for_key(key)
            if found is not None:
                self.post(*found)

    def _idle(self) -> None:
        """No new frame: keep the preview responsive and the virtual camera fed."""
        status = self.grabber.status
        if status != self._last_status:
            self._last_status = status
            if status not in ("ok", "end of input"):
                log.warning("camera: %s", status)
        camera = self.virtual_camera
        now = time.perf_counter()
        output = self._last_marked
        if output is not None and camera is not None and now - self._last_sent >= 1 / camera.fps:
            camera.send(output)
            self._last_sent = now
        camera_image = None if self._last_job is None else self._last_job.camera
        self._show(camera_image, self._last_marked, None, f"camera: {status}")

    def run(self) -> int:
        """Run until the end of the input or quit; returns the number of frames sent."""
        self.select_avatar(self.avatar_index)
        self.grabber.start()
        framing = threading.Thread(target=self._framing, name="framing", daemon=True)
        framing.start()
        try:
            while not self._stop.is_set():
                while not self._actions.empty():
                    self._apply(*self._actions.get())
                job = self._handoff.get(timeout=0.05)
                if job is None:
                    if self._handoff.finished:
                        break
                    self._idle()
                    continue
                start = time.perf_counter()
                image, status = self._animate(job)
                animated = time.perf_counter()
                if self.marker is not None:
                    image = self.marker(image)
                marked = time.perf_counter()
                self._last_marked = image
                self._send(image)
                sent = time.perf_counter()
                latency = (sent - job.frame.timestamp) * 1000
                stages = {
                    "framing": job.framing_ms,
                    "inference": (animated - start) * 1000,
                    **({"watermark": (marked - animated) * 1000} if self.marker else {}),
                    "output": (sent - marked) * 1000,
                    "latency": latency,
                }
                rtt = self.animator.round_trip_ms
                if rtt is not None:  # the remote backend: the frame's round trip to the server
                    stages["rtt"] = rtt
                for name, value in stages.items():
                    self._stats.add(name, value)
                self._stats.tick(sent)
                engine_status = getattr(self.animator.engine, "status", "")  # int8 switch
                shown = f"{status} | {engine_status}" if engine_status else status
                self._show(job.camera, image, job.crop.box, shown)
                previous, self._last_job = self._last_job, job
                if previous is not None:
                    self._release(previous)
                self.frames_out += 1
                if self.on_frame is not None:
                    record = FrameRecord(
                        index=job.frame.index,
                        status=status,
                        crop_status=job.crop.status,
                        box=job.crop.box,
                        face=job.face,
                        avatar=self.avatar_index,
                        latency_ms=latency,
                        stages_ms=stages,
                    )
                    self.on_frame(record, self)
        finally:
            self._stop.set()
            self._handoff.cancel()
            self.grabber.stop()
            framing.join(timeout=5)
            if self._last_job is not None:
                self._release(self._last_job)
                self._last_job = None
        return self.frames_out

    @property
    def stats(self) -> dict[str, float]:
        """Moving averages: fps and per-stage milliseconds."""
        return dict(self._stats.values)

    @property
    def buffers_allocated(self) -> int:
        """Camera and crop buffers allocated so far: bounded by the frames in flight at once
        (a few), not by the frames processed."""
        return self._mirrors.allocated + self._crops.allocated

    @property
    def dropped(self) -> int:
        """Frames dropped by the capture and framing stages to keep up."""
        return self.grabber.dropped + self._handoff.dropped
