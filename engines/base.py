"""The engine interface every backend implements.

Lifecycle (as NVIDIA's Polygraphy runners): create from artifacts, run by named tensors, close.
Engines are context managers. Two levels of use:

- :meth:`Engine.run` runs one graph of the I/O spec (:mod:`export.iospec`) on host arrays fed
  and fetched by name, with buffers of its own (each backend's ``_run_once``).
- The session API keeps the avatar's cached state on the device: :meth:`Engine.set_avatar`
  runs the avatar graph once and keeps its outputs; :meth:`Engine.set_motion` uploads the motion
  transfer once per reference frame; :meth:`Engine.animate` runs one frame graph call per frame
  and copies back only the frame and its keypoints.

Calling them out of order (``animate()`` before ``set_avatar()``, anything after ``close()``)
is a bug in the caller and raises :class:`~engines.errors.EngineUsageError` (a RuntimeError).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from export.iospec import (
    AVATAR,
    AVATAR_JACOBIAN,
    AVATAR_KP,
    DRIVING,
    DRIVING_JACOBIAN,
    DRIVING_KP,
    MOTION_JACOBIAN,
    MOTION_JACOBIAN_OFFSET,
    MOTION_OFFSET,
    MOTION_SCALE,
    PREDICTION,
    GraphSpec,
    ModelIO,
)
from export.motion import MotionTransfer, absolute_motion

from .errors import EngineError, EngineUsageError


@dataclass(frozen=True)
class KeypointArrays:
    """Keypoints copied to the host."""

    value: np.ndarray  # B x K x 2
    jacobian: np.ndarray | None  # B x K x 2 x 2, None without jacobians


@dataclass(frozen=True)
class FrameResult:
    """One animated frame (batch) and the driving keypoints it was made from."""

    prediction: np.ndarray  # B x C x H x W float32 in [0, 1]
    driving: KeypointArrays  # raw driving keypoints, for calibration


class Engine(ABC):
    """A backend that runs the avatar and frame graphs of one model."""

    backend: ClassVar[str] = "abstract"  # the --backend name
    # True when the frames it returns already carry the synthetic-content watermark (a server
    # that marks what it sends): the live loop then does not embed it a second time.
    marks_frames: ClassVar[bool] = False

    def __init__(self, io: ModelIO, precision: str, device: str):
        self.io = io  # the I/O spec: names, shapes and dtypes of both graphs
        self.precision = precision  # "fp32" or "fp16" (inside the graph; I/O is float32)
        self.device = device  # "cpu" or "cuda[:N]"
        self._state: dict[str, Any] = {}  # device handles of the frame graph's cached inputs
        self._closed = False
        self._avatar_set = False
        self.selection_reason = f"{self.backend} backend"  # why it runs; set by create_engine
        # What runs differently from the defaults, and why (modes, providers, fallbacks); each
        # note is also in selection_reason.
        self.notes: list[str] = []

    # --- what a backend implements -------------------------------------------------------

    @abstractmethod
    def _to_device(self, name: str, array: np.ndarray) -> Any:
        """Copy a host array to the device as the input ``name`` (reusing its buffer)."""

    @abstractmethod
    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        """Copy the device tensor ``handle`` (output ``name``) to a host array."""

    @abstractmethod
    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``graph`` on device handles named by input; return device handles by output."""

    @abstractmethod
    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``graph`` on checked host arrays with buffers of its own (never the session's
        fixed buffers, so the avatar state and motion stay as they are); return host arrays."""

    @abstractmethod
    def _release(self) -> None:
        """Free backend resources (sessions, contexts, buffers)."""

    # --- public API ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        """One line for logs: backend, precision and device."""
        return f"{self.backend} ({self.precision}, {self.device})"

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUsageError(f"the {self.backend} engine was closed; create a new one")

    def _check_array(self, graph: GraphSpec, name: str, array: np.ndarray) -> np.ndarray:
        spec = graph.tensor(name)
        array = np.asarray(array)
        if tuple(array.shape) != spec.shape:
            raise EngineError(
                f"input '{name}' of graph '{graph.name}' has shape {tuple(array.shape)}, "
                f"expected {spec.shape}"
            )
        return np.ascontiguousarray(array, dtype=spec.dtype)

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph on host arrays named as in the I/O spec; return its outputs by name.

        Independent of the session API: it uses buffers of its own, so the avatar state and
        motion that the session keeps are untouched.
        """
        self._check_open()
        spec = self.io.graph(graph)
        unknown = set(feeds) - set(spec.input_names)
        missing = [n for n in spec.input_names if n not in feeds]
        if unknown or missing:
            raise EngineError(
                f"graph '{graph}' takes inputs {spec.input_names}; missing {missing}, "
                f"unknown {sorted(unknown)}"
            )
        checked = {name: self._check_array(spec, name, feeds[name]) for name in spec.input_names}
        outputs = self._run_once(spec, checked)
        return {name: outputs[name] for name in spec.output_names}

    def set_avatar(self, avatar: np.ndarray) -> KeypointArrays:
        """Encode the avatar (B x C x H x W float32 in [0, 1]) once; its state stays on the
        device. Resets the motion to absolute until :meth:`set_motion` is called."""
        self._check_open()
        handle = self._to_device(AVATAR, self._check_array(self.io.avatar, AVATAR, avatar))
        outputs = self._execute(self.io.avatar, {AVATAR: handle})
        self._state.update(outputs)
        self._avatar_set = True
        self.set_motion(absolute_motion(self.io.num_kp, self.io.jacobian, self.io.batch))
        return KeypointArrays(
            self._to_host(AVATAR_KP, outputs[AVATAR_KP]),
            self._to_host(AVATAR_JACOBIAN, outputs[AVATAR_JACOBIAN]) if self.io.jacobian else None,
        )

    def set_motion(self, motion: MotionTransfer) -> None:
        """Upload the motion transfer (when the avatar or the reference frame changes; per frame
        only while the live loop smooths the motion)."""
        self._check_open()
        frame = self.io.frame
        self._state[MOTION_SCALE] = self._to_device(
            MOTION_SCALE, self._check_array(frame, MOTION_SCALE, motion.scale)
        )
        self._state[MOTION_OFFSET] = self._to_device(
            MOTION_OFFSET, self._check_array(frame, MOTION_OFFSET, motion.offset)
        )
        if self.io.jacobian:
            if motion.jacobian is None:
                raise EngineError("this model has jacobians; the motion transfer has none")
            self._state[MOTION_JACOBIAN] = self._to_device(
                MOTION_JACOBIAN, self._check_array(frame, MOTION_JACOBIAN, motion.jacobian)
            )
            self._state[MOTION_JACOBIAN_OFFSET] = self._to_device(
                MOTION_JACOBIAN_OFFSET,
                self._check_array(frame, MOTION_JACOBIAN_OFFSET, motion.jacobian_offset),
            )

    def animate(self, driving: np.ndarray) -> FrameResult:
        """Animate one driving frame (B x C x H x W float32 in [0, 1]) with the cached avatar."""
        self._check_open()
        if not self._avatar_set:
            raise EngineUsageError("animate() was called before set_avatar()")
        feeds = dict(self._state)
        feeds[DRIVING] = self._to_device(
            DRIVING, self._check_array(self.io.frame, DRIVING, driving)
        )
        outputs = self._execute(self.io.frame, feeds)
        jacobian = None
        if self.io.jacobian:
            jacobian = self._to_host(DRIVING_JACOBIAN, outputs[DRIVING_JACOBIAN])
        return FrameResult(
            prediction=self._to_host(PREDICTION, outputs[PREDICTION]),
            driving=KeypointArrays(self._to_host(DRIVING_KP, outputs[DRIVING_KP]), jacobian),
        )

    def close(self) -> None:
        """Release the backend's resources; the engine cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._state.clear()
            self._release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
