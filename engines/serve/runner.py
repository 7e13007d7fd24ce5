"""The model side of a replica: encodes avatars and animates batches of frames of different
sessions (each with its own avatar and motion) in one frame-graph call.

Engines have static shapes, so a replica holds one engine per batch size in
:meth:`ServerSettings.batch_sizes` (1, 2, 4, ..., max_batch); a batch of n frames runs on the
smallest that fits, its unused rows filled with copies of the first item (valid inputs whose
outputs are discarded). The batched inputs are written into buffers owned by the runner, one
set per batch size, reused for every call. No Ray here: tests drive it directly.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from export.iospec import (
    AVATAR,
    AVATAR_GRAPH,
    DRIVING,
    DRIVING_JACOBIAN,
    DRIVING_KP,
    FRAME_GRAPH,
    MOTION_JACOBIAN,
    MOTION_JACOBIAN_OFFSET,
    MOTION_OFFSET,
    MOTION_SCALE,
    PREDICTION,
    ModelIO,
)
from export.motion import absolute_motion

from ..base import Engine
from ..frames import image_to_input, output_to_image
from ..watermark import Watermarker
from .identity import ModelIdentity, file_sha256
from .settings import ServerSettings


@dataclass
class SessionState:
    """What a replica keeps for one session: the encoded avatar and the motion transfer."""

    avatar: dict[str, np.ndarray]  # avatar-graph outputs by name, each 1 x ...
    motion: dict[str, np.ndarray]  # motion_scale, motion_offset[, jacobian parts], 1 x ...


@dataclass(frozen=True)
class FrameJob:
    """One session's frame in a batch."""

    state: SessionState  # that session's avatar and motion
    driving: np.ndarray  # R x R x 3 uint8 driving crop


@dataclass(frozen=True)
class FrameOutput:
    """One session's result."""

    prediction: np.ndarray  # 1 x C x H x W float32 in [0, 1]
    driving_kp: np.ndarray  # 1 x K x 2
    driving_jacobian: np.ndarray | None  # 1 x K x 2 x 2, None without jacobians


def finalize_frame(prediction: np.ndarray) -> np.ndarray:
    """The one place a frame the server returns is finalized: 1 x C x H x W float32 in [0, 1]
    -> H x W x 3 uint8 RGB with the synthetic-content watermark (engines.watermark). Every frame
    sent to a client passes here; clients do not mark it again (RemoteEngine.marks_frames)."""
    image = output_to_image(prediction)
    height, width = image.shape[:2]
    return _watermarker(height, width).embed(image, out=image)


@functools.lru_cache(maxsize=4)
def _watermarker(height: int, width: int) -> Watermarker:
    """One watermarker per frame size (its pattern is computed once)."""
    return Watermarker(height, width)


class BatchRunner:
    """Engines for every batch size of one replica, and the batch statistics it formed."""

    def __init__(self, settings: ServerSettings, engines: dict[int, Engine] | None = None):
        from export.config import load_config

        self.settings = settings
        config = load_config(settings.config, settings.resolution)
        self.engines = engines if engines is not None else _create_engines(settings, config)
        one = self.engines[1]
        self.io: ModelIO = one.io  # the batch-1 I/O spec (what one session sends and gets)
        self.identity = ModelIdentity(
            config=config.name,
            resolution=self.io.resolution,
            num_kp=self.io.num_kp,
            jacobian=self.io.jacobian,
            checkpoint_sha256=file_sha256(settings.checkpoint),
            backend=one.backend,
            precision=one.precision,
            device=one.device,
        )
        self.batches: Counter[int] = Counter()  # frames per call -> calls
        self.frames = 0  # frames animated
        self.busy_s = 0.0  # time spent in frame-graph calls
        self._lock = threading.Lock()  # one graph call at a time
        self._feeds = {
            size: {t.name: np.empty(t.shape, t.dtype) for t in self.engines[size].io.frame.inputs}
            for size in self.engines
        }

    def describe(self) -> str:
        return self.identity.describe()

    def encode_avatar(self, image: np.ndarray) -> SessionState:
        """Run the avatar graph once for a session's avatar (R x R x 3 uint8)."""
        with self._lock:
            outputs = self.engines[1].run(AVATAR_GRAPH, {AVATAR: image_to_input(image)})
        motion = absolute_motion(self.io.num_kp, self.io.jacobian, 1)
        return SessionState(avatar=outputs, motion=motion_arrays(motion))

    def animate(self, jobs: list[FrameJob]) -> list[FrameOutput]:
        """Animate frames of different sessions together (any number; large ones are split)."""
        results: list[FrameOutput] = []
        largest = max(self.engines)
        for start in range(0, len(jobs), largest):
            results.extend(self._animate_batch(jobs[start : start + largest]))
        return results

    def _animate_batch(self, jobs: list[FrameJob]) -> list[FrameOutput]:
        count = len(jobs)
        size = min(s for s in self.engines if s >= count)
        feeds = self._feeds[size]
        with self._lock:
            for row in range(size):
                job = jobs[row if row < count else 0]
                image_to_input(job.driving, feeds[DRIVING][row : row + 1])
                for name, value in (*job.state.avatar.items(), *job.state.motion.items()):
                    feeds[name][row] = value[0]
            began = time.perf_counter()
            outputs = self.engines[size].run(FRAME_GRAPH, feeds)
            self.busy_s += time.perf_counter() - began
            self.batches[count] += 1
            self.frames += count
        jacobians = outputs.get(DRIVING_JACOBIAN)
        return [
            FrameOutput(
                prediction=outputs[PREDICTION][row : row + 1],
                driving_kp=outputs[DRIVING_KP][row : row + 1],
                driving_jacobian=None if jacobians is None else jacobians[row : row + 1],
            )
            for row in range(count)
        ]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


def motion_arrays(motion) -> dict[str, np.ndarray]:
    """A :class:`~export.motion.MotionTransfer` as frame-graph inputs by name."""
    arrays = {MOTION_SCALE: motion.scale, MOTION_OFFSET: motion.offset}
    if motion.jacobian is not None:
        arrays[MOTION_JACOBIAN] = motion.jacobian
        arrays[MOTION_JACOBIAN_OFFSET] = motion.jacobian_offset
    return {name: np.ascontiguousarray(a, np.float32) for name, a in arrays.items()}


def _create_engines(settings: ServerSettings, config) -> dict[int, Engine]:
    from .. import create_engine
    from ..options import EngineOptions

    engines: dict[int, Engine] = {}
    try:
        for size in settings.batch_sizes():
            options = EngineOptions(
                backend=settings.backend,
                precision=settings.precision,
                device=settings.device,
                batch=size,
                cache_dir=settings.cache_dir,
            )
            engines[size] = create_engine(settings.checkpoint, config, options)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return engines
