"""``--precision auto`` for a live camera: fp32 serves at once, int8 takes over when its check
passes, and the camera never waits for calibration.

:func:`create_for_run` is what a run starts its engine with. For a file input, or when the int8
model and its verdict are cached, it is :func:`engines.int8_auto.create_auto` (the decision is
made before the first frame). For a camera without a cached verdict it starts the fp32 engine
and returns a :class:`SwitchingEngine` around it: the frames the loop animates (framed exactly as
the loop frames them) and the avatars it sets are kept as calibration frames; once there are
:data:`LIVE_FRAMES`, a background thread calibrates and checks int8 on them while fp32 keeps
serving (:attr:`SwitchingEngine.status` says "optimizing for this CPU"). When the check passes,
the next call swaps in the int8 engine, with the avatar and motion replayed onto it, and closes
the fp32 one; when it fails, fp32 stays and the line says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from export.config import ModelConfig
from export.motion import MotionTransfer

from . import int8_auto
from .base import Engine, FrameResult, KeypointArrays
from .calibration import CalibrationFrames, CalibrationSource
from .int8_auto import create_auto, int8_taken, int8_unavailable, say, start_fp32
from .int8_verify import Int8Rejected
from .options import EngineOptions

log = logging.getLogger(__name__)

#: Driving frames with a face kept for calibration and its check (two thirds / one third).
LIVE_FRAMES = 24
#: What the status shows while int8 is being prepared.
OPTIMIZING = "optimizing for this CPU"


class NeedsCalibration(Exception):
    """Raised by the calibration source of a live start: no int8 model is cached yet."""


def _no_frames_yet() -> CalibrationFrames:
    raise NeedsCalibration


def _to_uint8(batch: np.ndarray) -> np.ndarray:
    """1 x 3 x R x R float in [0, 1] -> R x R x 3 uint8 (a copy: the caller reuses its buffer)."""
    image = np.asarray(batch[0], np.float32).transpose(1, 2, 0)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


class SwitchingEngine:
    """An engine that serves with ``first`` until a better one is ready, then swaps it in at a
    call boundary (on the caller's thread), replaying the avatar and motion onto it."""

    def __init__(
        self,
        first: Engine,
        build: Callable[[CalibrationFrames], Engine],
        frames_needed: int = LIVE_FRAMES,
    ):
        self._current = first
        self._build = build  # calibration frames -> the verified int8 engine (or raises)
        self._frames_needed = frames_needed
        self._avatars: list[np.ndarray] = []  # R x R x 3 uint8, as set
        self._driving: list[np.ndarray] = []  # R x R x 3 uint8, as animated
        self._avatar: np.ndarray | None = None  # the last avatar input, replayed on a swap
        self._motion: MotionTransfer | None = None  # the last motion, replayed on a swap
        self._pending: Engine | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.status = f"{OPTIMIZING}: collecting frames (fp32 meanwhile)"  # "" once decided
        self.switched = threading.Event()  # set when int8 has taken over
        self.decided = threading.Event()  # set when the check has passed or failed
        self._reason_prefix = ""

    # --- what the loop uses ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine serving now."""
        return self._current

    @property
    def io(self) -> Any:
        return self._current.io

    @property
    def precision(self) -> str:
        return self._current.precision

    @property
    def backend(self) -> str:
        return self._current.backend

    @property
    def selection_reason(self) -> str:
        return self._reason_prefix + self._current.selection_reason

    def __getattr__(self, name: str) -> Any:  # marks_frames, device, notes, describe, ...
        return getattr(self._current, name)

    def set_avatar(self, avatar: np.ndarray) -> KeypointArrays:
        self._swap_if_ready()
        self._avatar = np.array(avatar, np.float32, copy=True)
        self._motion = None
        if self._thread is None and len(self._avatars) < 8:
            self._avatars.append(_to_uint8(self._avatar))
        return self._current.set_avatar(avatar)

    def set_motion(self, motion: MotionTransfer) -> None:
        self._motion = motion
        self._current.set_motion(motion)

    def animate(self, driving: np.ndarray) -> FrameResult:
        self._swap_if_ready()
        if self._thread is None and not self._closed:
            self._driving.append(_to_uint8(driving))
            self.status = (
                f"{OPTIMIZING}: collecting frames {len(self._driving)}/{self._frames_needed} "
                "(fp32 meanwhile)"
            )
            if len(self._driving) >= self._frames_needed and self._avatars:
                self._start_calibration()
        return self._current.animate(driving)

    def run(self, graph: str, feeds: Any) -> dict[str, np.ndarray]:
        return self._current.run(graph, feeds)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.close()
        self._current.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SwitchingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the background work ---------------------------------------------------------------

    def _start_calibration(self) -> None:
        frames = CalibrationFrames(
            tuple(self._avatars),
            tuple(self._driving),
            f"{len(self._avatars)} avatar(s), first {len(self._driving)} live frames with a face",
        )
        self._driving = []
        self.status = f"{OPTIMIZING}: calibrating int8 (fp32 meanwhile)"
        say(f"{OPTIMIZING}: calibrating and checking int8 in the background; fp32 serves meanwhile")
        self._thread = threading.Thread(
            target=self._prepare, args=(frames,), name="int8-calibration", daemon=True
        )
        self._thread.start()

    def _prepare(self, frames: CalibrationFrames) -> None:
        try:
            engine = self._build(frames)
        except Int8Rejected as exc:
            why = f"int8 failed its check on this checkpoint and face: {exc.verdict.line()}"
            self._decided_fp32(why)
            return
        except Exception as exc:  # reported; fp32 keeps serving
            log.debug("int8 calibration in the background failed", exc_info=True)
            text = str(exc).strip().splitlines()
            self._decided_fp32(f"int8 could not be prepared ({text[0] if text else exc!r})")
            return
        with self._lock:
            if self._closed:
                engine.close()
                return
            self._pending = engine
        self.status = f"{OPTIMIZING}: int8 verified, switching"
        say(f"{int8_taken(engine)}; switching from fp32")
        self.decided.set()

    def _decided_fp32(self, why: str) -> None:
        line = f"precision auto: staying on fp32, because {why}"
        self._reason_prefix = f"{line}; "
        self.status = ""
        say(line)
        self.decided.set()

    def _swap_if_ready(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        if self._avatar is not None:
            pending.set_avatar(self._avatar)
            if self._motion is not None:
                pending.set_motion(self._motion)
        previous, self._current = self._current, pending
        previous.close()
        self.status = ""
        self.switched.set()
        log.info("engine: %s", pending.selection_reason)


def create_for_run(
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None,
    live: bool,
    create: Callable[..., Engine] | None = None,
) -> Engine | SwitchingEngine:
    """The engine of a run (see the module doc): ``live`` runs never wait for int8.
    ``create`` (default :func:`engines.select.create`) starts every engine but the int8 one."""
    if create is None:
        from .select import create

    if not live or options.precision != "auto" or int8_unavailable(options) is not None:
        return create(checkpoint, config, options, calibration)
    try:  # a cached model and verdict decide at once
        engine = int8_auto.start_verified_int8(checkpoint, config, options, _no_frames_yet)
    except NeedsCalibration:
        pass
    except Int8Rejected as exc:
        why = f"int8 failed its check on this checkpoint and face: {exc.verdict.line()}"
        return start_fp32(create, checkpoint, config, options, None, why)
    except Exception:  # anything else: the synchronous path reports it
        return create_auto(create, checkpoint, config, options, None)
    else:
        line = int8_taken(engine)
        engine.selection_reason = f"openvino on cpu (int8), {line}"
        say(line)
        return engine
    fp32 = create(checkpoint, config, replace(options, precision="fp32"), None)
    say(
        f"precision auto: {OPTIMIZING}: fp32 serves the camera now; int8 is calibrated and "
        f"checked on the first {LIVE_FRAMES} frames with a face, then takes over if it passes"
    )
    background = replace(options, recalibrate_int8=False)  # the cached model was dropped

    def build(frames: CalibrationFrames) -> Engine:
        return int8_auto.start_verified_int8(checkpoint, config, background, frames)

    return SwitchingEngine(fp32, build, LIVE_FRAMES)
