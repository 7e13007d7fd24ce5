"""Turns cropped driving frames into animated avatar frames with relative or absolute motion.

Work that does not change per frame happens once: the avatar is encoded by
:meth:`Animator.set_avatar`, and the motion transfer (reference keypoints, hull scale) is
computed by :meth:`Animator.calibrate`, only when the avatar or the reference changes. With
motion smoothing on (:mod:`live.smoothing`) a small motion upload (a few hundred bytes) goes
with every frame.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from engines import Engine, KeypointArrays
from engines.frames import image_to_input, output_to_image
from export.motion import MotionTransfer, absolute_motion, relative_motion

from .errors import SettingError
from .smoothing import KeypointSmoother, check_strength

#: The range of --motion-scale.
MOTION_SCALE_RANGE = (0.0, 3.0)


@dataclass(frozen=True)
class MotionOptions:
    """How driving motion is transferred to the avatar."""

    relative: bool = True  # relative to a reference frame (FOMM's demo); False: absolute
    adapt_scale: bool = True  # scale the motion by the avatar/reference keypoint hull ratio
    # Motion strength (relative motion): the keypoints' change from the reference pose is
    # multiplied by it; 1 as trained, below 1 calmer, above 1 exaggerated.
    scale: float = 1.0
    # Keypoint smoothing, 0-1 (live.smoothing): 0 off; higher steadies a shaky face more and
    # lags more behind quick movements.
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_strength(self.smoothing)
        low, high = MOTION_SCALE_RANGE
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale)) or not (
            low <= self.scale <= high
        ):
            raise SettingError(
                f"--motion-scale {self.scale!r} is out of range: expected {low:g} to {high:g} "
                "(1 moves as trained, 0.5 half as much, 1.5 more)."
            )


@dataclass(frozen=True)
class AnimatedFrame:
    """One output frame."""

    image: np.ndarray  # R x R x 3 uint8 RGB, the animated avatar
    keypoints: KeypointArrays  # the driving frame's raw keypoints


def normalized_keypoints(value: np.ndarray) -> np.ndarray:
    """Keypoints centred and scaled by their hull (FOMM's find_best_frame normalisation)."""
    from export.motion import convex_hull_area

    points = np.asarray(value, np.float64)[0]
    area = convex_hull_area(points)
    centred = points - points.mean(axis=0)
    return centred / np.sqrt(area) if area > 1e-12 else centred


class Animator:
    """An engine plus the avatar and reference state of one live session."""

    def __init__(self, engine: Engine, motion: MotionOptions = MotionOptions()):
        self.engine = engine  # runs the graphs; owned by the caller
        self.motion = motion  # relative/absolute and adapt-scale
        size = engine.io.resolution
        self._input = np.empty((1, 3, size, size), np.float32)  # reused driving buffer
        self._scratch = np.empty((size, size, 3), np.float32)  # reused output conversion buffer
        self._avatar_kp: KeypointArrays | None = None
        self._rest: np.ndarray | None = None
        self._reference: KeypointArrays | None = None
        self._transfer: MotionTransfer | None = None  # the motion before smoothing
        self._smoother = KeypointSmoother(motion.smoothing)

    @property
    def resolution(self) -> int:
        return self.engine.io.resolution

    @property
    def round_trip_ms(self) -> float | None:
        """The latest frame's round trip to an avatar server (remote backend), else None."""
        return getattr(self.engine, "last_rtt_ms", None)

    @property
    def avatar_keypoints(self) -> KeypointArrays | None:
        return self._avatar_kp

    @property
    def rest_image(self) -> np.ndarray:
        """The avatar at rest (R x R x 3 uint8): shown before the first animated frame."""
        if self._rest is None:
            raise RuntimeError("set_avatar() must be called first")
        return self._rest

    @property
    def reference(self) -> KeypointArrays | None:
        """Keypoints of the reference frame, ``None`` until calibrated."""
        return self._reference

    @property
    def calibrated(self) -> bool:
        return not self.motion.relative or self._reference is not None

    def set_avatar(self, image: np.ndarray) -> None:
        """Encode a new avatar (R x R x 3 uint8); keeps the reference frame."""
        self._avatar_kp = self.engine.set_avatar(image_to_input(image))
        self._rest = image.copy()
        self._update_motion()

    def calibrate(self, reference: KeypointArrays) -> None:
        """Use these driving keypoints as the reference (neutral) pose."""
        self._reference = reference
        self._update_motion()

    def reset_calibration(self) -> None:
        """Forget the reference: the next frame becomes the new one. The smoothing history
        goes too (a mirror toggle or a new pose must not blend with the old keypoints)."""
        self._reference = None
        self._smoother.reset()
        self._update_motion()

    def set_motion_scale(self, scale: float) -> None:
        """Change the motion strength (relative motion; see :class:`MotionOptions`)."""
        motion = replace(self.motion, scale=float(scale))  # validates
        self._update_motion(motion)
        self.motion = motion

    def set_motion_smoothing(self, strength: float) -> None:
        """Change the keypoint smoothing (see :class:`MotionOptions`)."""
        motion = replace(self.motion, smoothing=float(strength))  # validates
        if motion.smoothing == 0.0 and self._transfer is not None:
            self.engine.set_motion(self._transfer)  # back to the motion without a blend
        self._smoother.set_strength(motion.smoothing)
        self.motion = motion

    @property
    def smoothed_keypoints(self) -> KeypointArrays | None:
        """The driving keypoints the generator got last, before the motion transfer, while
        smoothing is on; None otherwise."""
        return self._smoother.smoothed if self._smoother.active else None

    def _update_motion(self, motion: MotionOptions | None = None) -> None:
        engine = self.engine
        motion = motion or self.motion
        if self._avatar_kp is None:
            return
        if motion.relative and self._reference is not None:
            avatar, ref = self._avatar_kp, self._reference
            transfer = relative_motion(
                avatar.value, avatar.jacobian, ref.value, ref.jacobian, motion.adapt_scale
            )
            if motion.scale != 1.0:
                transfer = _scaled(transfer, avatar.value, ref.value, motion.scale)
        else:
            transfer = absolute_motion(engine.io.num_kp, engine.io.jacobian, engine.io.batch)
        engine.set_motion(transfer)
        self._transfer = transfer

    def animate(
        self, crop: np.ndarray, out: np.ndarray | None = None, pts: float | None = None
    ) -> AnimatedFrame:
        """Animate the avatar with one driving crop (R x R x 3 uint8) captured at ``pts``
        (seconds on the source's clock; default: now, for smoothing).

        In relative mode the first frame after (re)calibration becomes the reference.
        """
        if self._avatar_kp is None:
            raise RuntimeError("set_avatar() must be called before animate()")
        smoother = self._smoother
        if not smoother.active:
            result = self.engine.animate(image_to_input(crop, self._input))
            if not self.calibrated:
                self.calibrate(result.driving)
                result = self.engine.animate(self._input)
        else:
            time_s = time.monotonic() if pts is None else float(pts)
            io = self.engine.io
            weights = smoother.weights(time_s, (io.batch, io.num_kp))  # B x K x 1
            result = self._smoothed_call(image_to_input(crop, self._input), weights)
            if not self.calibrated:
                self.calibrate(result.driving)
                result = self._smoothed_call(self._input, weights)
            smoother.update(result.driving, time_s, weights)
        image = output_to_image(result.prediction, out, self._scratch)
        return AnimatedFrame(image, result.driving)

    def _smoothed_call(self, driving: np.ndarray, weights: np.ndarray):
        """One engine call with the motion blended with the smoothing history."""
        if self._transfer is not None:
            self.engine.set_motion(self._smoother.transfer(self._transfer, weights))
        return self.engine.animate(driving)


def _scaled(
    transfer: MotionTransfer, avatar: np.ndarray, reference: np.ndarray, strength: float
) -> MotionTransfer:
    """``transfer`` with the keypoint change multiplied by ``strength``:
    avatar + (driving - reference) * s * strength = driving * (s * strength) + offset."""
    scale = transfer.scale * np.float32(strength)  # B x K x 1
    offset = np.asarray(avatar, np.float32) - np.asarray(reference, np.float32) * scale  # B x K x 2
    return MotionTransfer(scale.astype(np.float32), offset.astype(np.float32), transfer.jacobian)
