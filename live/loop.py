"""The per-frame loop's scheduler: capture -> face framing -> animation -> outputs, pipelined.

Three stages overlap: the capture thread (:class:`~live.grabber.LatestFrameGrabber`) reads the
camera, the framing thread finds the face and cuts the crop, and the calling thread animates
and sends the frame to the outputs (and runs the preview window, which must live on it). The
timing mode (:mod:`live.timing`, the grabber's) decides the hand-overs: ``live`` and ``paced``
hand on only the newest item, so a slow stage makes the others drop stale frames instead of
queueing them and latency never builds up; ``offline`` processes every frame in order.

What is shown for each frame (pause, no face, engine down, best frame, avatar switches) is
decided by the pure :class:`~live.policy.FramePolicy`; the outputs are :mod:`live.sinks`
objects with one ``send``. Every frame carries its capture time (latency) and presentation
time (the face tracker's clock and the recording's timestamps) from the source to the outputs.

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

import cv2
import numpy as np

from engines.errors import EngineUnavailable

from .actions import apply_action
from .animator import Animator
from .buffers import BufferPool
from .controls import Action
from .framing import CropBox
from .grabber import LatestFrameGrabber
from .handoff import Handoff
from .outputs import FrameSink
from .pipeline import Crop, Cropper, PreparedAvatar
from .policy import FramePolicy, NoFace
from .preview import PreviewWindow
from .sinks import FileOutput, Output, OutputFrame, PreviewOutput, VirtualCameraOutput
from .sources import Frame
from .timing import drops_frames
from .virtualcam import VirtualCamera

log = logging.getLogger("avatarcam")


@dataclass(frozen=True)
class LoopOptions:
    """Behaviour of the live loop (the timing mode is the grabber's)."""

    mirror: bool = False  # flip the camera image horizontally (a selfie view)
    best_frame: bool = False  # start in best-frame calibration mode
    no_face: NoFace = "hold"  # without a face: last frame, or avatar at rest
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
    pts: float = 0.0  # presentation time of the frame (seconds)


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
        virtual_camera: VirtualCamera | None = None,
        preview: PreviewWindow | None = None,
        outputs: list[Output] | None = None,
        on_frame: Callable[[FrameRecord, LiveLoop], None] | None = None,
        marker: Callable[..., np.ndarray] | None = None,
    ):
        self.grabber = grabber  # capture stage, started by run(); its mode is the timing mode
        self.cropper = cropper  # framing stage
        self.animator = animator  # engine and motion state
        self.policy = FramePolicy(
            animator, avatars, no_face=options.no_face, best_frame=options.best_frame
        )
        self.avatars = avatars  # framed avatar photos
        self.options = options
        self.virtual_camera = virtual_camera
        self.preview = preview
        # Where frames go: file sinks, the virtual camera, the preview, and any others given.
        self.outputs: list[Output] = [FileOutput(sink) for sink in sinks or []]
        if virtual_camera is not None:
            self.outputs.append(VirtualCameraOutput(virtual_camera))
        if preview is not None:
            self.outputs.append(PreviewOutput(preview, self.post))
        self.outputs += outputs or []
        self.on_frame = on_frame  # called after each frame (tests, logging)
        # Marks each frame as synthetic (live.marking.FrameMarker) before any output sees it;
        # called with the frame and whether the engine made it. Its time is the "watermark"
        # stage.
        self.marker = marker
        self.mirror = options.mirror
        self.frames_out = 0
        self._actions: queue.SimpleQueue[tuple[Action, object]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stats = _Stats()
        size = animator.resolution
        # Buffers owned by one job at a time: a job holds its mirrored camera image and crop
        # from framing until it is dropped or the next frame has been shown, so the camera
        # stage can run ahead of the engine without overwriting what is being animated.
        self._mirrors = BufferPool()
        self._crops = BufferPool((size, size, 3))
        self._lossy = drops_frames(grabber.mode)
        self._handoff: Handoff[_Job] = Handoff(not self._lossy, on_drop=self._release)
        # Live and paced: the framing stage frames one frame per animated frame, started so
        # that it is ready when the animation stage is (see _wait_for_the_engine).
        self._busy_ms = 0.0  # moving average of the animation stage's time per frame
        self._framing_ms = 0.0  # moving average of the framing stage's time per frame
        self._free_at = 0.0  # when the animation stage should take the next job
        self._last_job: _Job | None = None  # the frame shown last, kept for idle refreshes
        self._last_marked: np.ndarray | None = None  # the last frame as the outputs got it
        self._last_pts = 0.0
        self._last_status = ""
        self._framed_mirror = options.mirror  # the mirror setting the framing stage last used

    # --- control (any thread) ------------------------------------------------------------

    def post(self, action: Action, value: object = None) -> None:
        """Ask for an action (thread-safe); applied before the next frame. ``value``: the
        avatar index of SELECT_AVATAR, the strength of SET_MOTION_SCALE."""
        self._actions.put((action, value))

    def stop(self) -> None:
        self._stop.set()

    @property
    def avatar_index(self) -> int:
        """The avatar shown (0-based)."""
        return self.policy.avatar_index

    @property
    def paused(self) -> bool:
        return self.policy.paused

    @property
    def best_frame(self) -> bool:
        return self.policy.best_frame

    @property
    def motion_scale(self) -> float:
        return self.animator.motion.scale

    @property
    def motion_smoothing(self) -> float:
        return self.animator.motion.smoothing

    def _apply(self, action: Action, value: object) -> None:
        try:
            apply_action(self, action, value)
        except EngineUnavailable as exc:
            log.warning("could not apply %s now: %s", action.name.lower(), exc)

    # --- framing thread ------------------------------------------------------------------

    def _release(self, job: _Job) -> None:
        """Return a job's buffers to their pools; the job must not be used afterwards."""
        if job.mirror_buffer is not None:
            self._mirrors.release(job.mirror_buffer)
        if job.crop_buffer is not None:
            self._crops.release(job.crop_buffer)

    def _frame_job(self, frame: Frame) -> _Job:
        """Mirror (when asked) and crop one camera frame into buffers the job holds."""
        start = time.perf_counter()
        mirror = self.mirror
        if mirror != self._framed_mirror:  # the face moved to the other side: track anew
            self._framed_mirror = mirror
            reset = getattr(self.cropper, "reset", None)
            if reset is not None:
                reset()
        mirror_buffer = None
        camera = frame.image
        if mirror:
            mirror_buffer = self._mirrors.acquire(frame.image.shape)
            camera = cv2.flip(frame.image, 1, dst=mirror_buffer)
        crop_buffer: np.ndarray | None = self._crops.acquire()
        crop = self.cropper(camera, frame.pts, crop_buffer)
        if crop.image is None:
            self._crops.release(crop_buffer)
            crop_buffer = None
        face = getattr(self.cropper, "last_face", None)
        framing_ms = (time.perf_counter() - start) * 1000
        return _Job(frame, camera, crop, face, framing_ms, mirror_buffer, crop_buffer)

    def _wait_for_the_engine(self) -> bool:
        """Live and paced: wait until the job handed over last was taken, then until the
        animation stage is about to be free (its average time, less the framing's), so the
        frame framed next is as fresh as possible and no frame is framed to be dropped.
        False when the stream ended or the loop stops first."""
        while not self._handoff.wait_taken(0.1):
            if self._stop.is_set():
                return False
        # Framing time, the wait for the camera's next frame and its decoding, a margin.
        period = 1 / (self.grabber.measured_fps or self.grabber.source.fps or 30.0)
        lead = (self._framing_ms + 5.0) / 1000 + period
        delay = min(self._free_at - lead - time.perf_counter(), 0.5)
        return not (delay > 0 and self._stop.wait(delay))

    def _framing(self) -> None:
        try:
            while not self._stop.is_set():
                if self._lossy and not self._wait_for_the_engine():
                    break
                frame = self.grabber.get(timeout=0.1)
                if frame is None:
                    if self.grabber.finished:
                        break
                    continue
                job = self._frame_job(frame)
                self._framing_ms = 0.8 * self._framing_ms + 0.2 * job.framing_ms
                if not self._handoff.put(job):
                    self._release(job)
                    break
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._handoff.close(exc)
        else:
            self._handoff.close()

    # --- main thread ---------------------------------------------------------------------

    def _send(self, frame: OutputFrame) -> None:
        for output in self.outputs:
            output.send(frame)

    def _idle(self) -> None:
        """No new frame: keep the preview responsive and the virtual camera fed."""
        status = self.grabber.status
        if status != self._last_status:
            self._last_status = status
            if status not in ("ok", "end of input"):
                log.warning("camera: %s", status)
        job = self._last_job
        self._send(
            OutputFrame(
                self._last_marked,
                self._last_pts,
                "refresh",
                camera=None if job is None else job.camera,
                status=f"camera: {status}",
                stats=self._stats.values,
            )
        )

    def _process(self, job: _Job) -> None:
        start = time.perf_counter()
        shown = self.policy.frame(
            job.crop.image, holding=job.crop.status == "holding", pts=job.frame.pts
        )
        animated = time.perf_counter()
        image = shown.image
        if self.marker is not None:
            image = self.marker(image, shown.from_engine)
        marked = time.perf_counter()
        self._last_marked, self._last_pts = image, job.frame.pts
        self._stats.values["motion scale"] = self.motion_scale
        self._stats.values["motion smoothing"] = self.motion_smoothing
        # What the engine says of itself (the int8 switch: "optimizing for this CPU").
        engine_status = getattr(getattr(self.animator, "engine", None), "status", "")
        self._send(
            OutputFrame(
                image,
                job.frame.pts,
                camera=job.camera,
                box=job.crop.box,
                status=f"{shown.status} | {engine_status}" if engine_status else shown.status,
                stats=self._stats.values,
            )
        )
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
        previous, self._last_job = self._last_job, job
        if previous is not None:
            self._release(previous)
        self.frames_out += 1
        if self.on_frame is not None:
            record = FrameRecord(
                index=job.frame.index,
                status=shown.status,
                crop_status=job.crop.status,
                box=job.crop.box,
                face=job.face,
                avatar=self.avatar_index,
                latency_ms=latency,
                stages_ms=stages,
                pts=job.frame.pts,
            )
            self.on_frame(record, self)

    def run(self) -> int:
        """Run until the end of the input or quit; returns the number of frames sent."""
        try:
            self.policy.select_avatar(self.avatar_index)
        except EngineUnavailable as exc:  # set again with the first frame
            log.warning("could not set the avatar yet: %s", exc)
        self.grabber.start()
        framing = threading.Thread(target=self._framing, name="framing", daemon=True)
        framing.start()
        ended = False
        try:
            while not self._stop.is_set():
                while not self._actions.empty():
                    self._apply(*self._actions.get())
                job = self._handoff.get(timeout=0.05)
                if job is None:
                    if self._handoff.finished:
                        ended = True
                        break
                    self._idle()
                    continue
                taken = time.perf_counter()
                self._free_at = taken + self._busy_ms / 1000
                self._process(job)
                busy_ms = (time.perf_counter() - taken) * 1000
                self._busy_ms = 0.8 * self._busy_ms + 0.2 * busy_ms
            if ended and self.grabber.last_pts is not None:
                # The input's end (its last frame's time): timed recordings hold the last
                # frame shown through it, so they play as long as the input even when its
                # last frames were dropped.
                self._send(OutputFrame(self._last_marked, self.grabber.last_pts, "end"))
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
