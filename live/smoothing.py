"""Motion smoothing: a One Euro filter on the driving keypoints and jacobians, run in the graph.

The engine detects a frame's driving keypoints and animates with them in one call, so the
filter cannot see the keypoints before the generator uses them. It does not need to: the
frame graph's motion map is affine per keypoint (:mod:`export.motion`), and so is the filter's
update ``smoothed = w * sample + (1 - w) * previous``. Before each call the weight ``w`` of
every keypoint is fixed and folded into the motion transfer, the graph blends the new
keypoints (and jacobians) with the previous smoothed ones itself, and after the call the same
blend is repeated on the host with the keypoints the engine returned, for the next frame.

The filter is the One Euro filter (Casiez, Roussel and Vogel, CHI 2012; the one
:mod:`live.framing` steadies the crop with), per keypoint, with one difference: each
keypoint's cutoff comes from its filtered speed up to the previous frame, since the current
frame's speed is only known after the call. At the start of a fast movement the first frame
is smoothed at the previous (lower) cutoff; the cutoff rises from the next frame on.

One strength S in [0, 1] (``--motion-smoothing``) sets the filter: 0 is off (the motion as
trained, no per-frame motion upload), and above 0 the minimum cutoff falls geometrically from
:data:`CUTOFF_HZ` ``[0]`` to ``[1]``: S = 0.5 passes keypoint motion slower than about 1.8 Hz
unsmoothed, S = 1 about 0.4 Hz. The speed coefficient :data:`BETA` raises the cutoff as a
keypoint moves, so head turns and speech keep up while a still face stops shaking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engines import KeypointArrays
from export.motion import MotionTransfer

from .errors import SettingError

#: The range of --motion-smoothing.
SMOOTHING_RANGE = (0.0, 1.0)
#: Minimum cutoff in Hz at the weakest (S -> 0) and strongest (S = 1) smoothing.
CUTOFF_HZ = (8.0, 0.4)
#: Cutoff added per unit/s of a keypoint's filtered speed (keypoints span [-1, 1]).
BETA = 4.0
#: Cutoff of the speed estimate, Hz.
SPEED_CUTOFF_HZ = 1.0
#: A gap between frames longer than this (s) restarts the filter: the face was away.
MAX_GAP_S = 0.5


def check_strength(strength: float) -> float:
    """``strength`` as a float, or a SettingError naming --motion-smoothing."""
    low, high = SMOOTHING_RANGE
    if not (isinstance(strength, int | float) and math.isfinite(strength)) or not (
        low <= strength <= high
    ):
        raise SettingError(
            f"--motion-smoothing {strength!r} is out of range: expected {low:g} to {high:g} "
            "(0 off, 0.5 steadies a shaky face, 1 the steadiest and slowest)."
        )
    return float(strength)


def min_cutoff_hz(strength: float) -> float:
    """The filter's minimum cutoff for a strength in (0, 1]."""
    weakest, strongest = CUTOFF_HZ
    return weakest * (strongest / weakest) ** strength


@dataclass(frozen=True)
class _State:
    """The filter's memory after one frame."""

    time: float  # the frame's presentation time, s
    value: np.ndarray  # B x K x 2 smoothed keypoints
    jacobian: np.ndarray | None  # B x K x 2 x 2 smoothed jacobians
    speed: np.ndarray  # B x K x 1 filtered speed (norm of the velocity), units/s


class KeypointSmoother:
    """One Euro smoothing of the driving keypoints, folded into the motion transfer.

    Per frame: :meth:`weights` for the frame's time, :meth:`transfer` to blend inside the
    graph, the engine call, then :meth:`update` with the keypoints it returned.
    """

    def __init__(self, strength: float) -> None:
        self.strength = check_strength(strength)  # 0 off; see the module docstring
        self._state: _State | None = None

    @property
    def active(self) -> bool:
        return self.strength > 0.0

    def set_strength(self, strength: float) -> None:
        self.strength = check_strength(strength)
        if not self.active:
            self.reset()

    def reset(self) -> None:
        """Forget the history: the next frame passes unsmoothed."""
        self._state = None

    def weights(self, time: float, shape: tuple[int, int]) -> np.ndarray:
        """B x K x 1 weight of each keypoint's new sample at ``time`` (s); ``shape`` is
        (B, K). 1 passes the sample through (no history); 0 keeps the previous value (a
        repeated timestamp)."""
        state = self._state
        if state is not None and time - state.time > MAX_GAP_S:
            self._state = state = None
        if state is None or not self.active:
            return np.ones((*shape, 1), np.float32)
        period = time - state.time
        if period <= 0.0:
            return np.zeros((*shape, 1), np.float32)
        cutoff = min_cutoff_hz(self.strength) + BETA * state.speed  # B x K x 1
        return _sample_weight(period, cutoff).astype(np.float32)

    def transfer(self, base: MotionTransfer, weights: np.ndarray) -> MotionTransfer:
        """``base`` applied to ``w * drv + (1 - w) * previous`` (and the same for jacobians):

        value    = drv * (s w) + (offset + s (1 - w) prev)
        jacobian = J_drv @ (w T) + ((1 - w) J_prev @ T + jacobian_offset)
        """
        state = self._state
        if state is None:
            return base
        keep = 1.0 - weights  # B x K x 1
        scale = base.scale * weights
        offset = base.offset + base.scale * keep * state.value
        jacobian = jacobian_offset = None
        if base.jacobian is not None and state.jacobian is not None:
            jacobian = base.jacobian * weights[..., None]  # B x K x 2 x 2
            jacobian_offset = base.jacobian_offset + keep[..., None] * (
                state.jacobian @ base.jacobian
            )
        return MotionTransfer(
            scale.astype(np.float32),
            offset.astype(np.float32),
            None if jacobian is None else jacobian.astype(np.float32),
            None if jacobian_offset is None else jacobian_offset.astype(np.float32),
        )

    def update(self, driving: KeypointArrays, time: float, weights: np.ndarray) -> None:
        """Take the frame's raw driving keypoints into the history, blended with ``weights``
        as the graph blended them."""
        value = np.asarray(driving.value, np.float64)
        jacobian = None if driving.jacobian is None else np.asarray(driving.jacobian, np.float64)
        state = self._state
        if not self.active:
            return
        if state is None:
            speed = np.zeros((*value.shape[:2], 1))
            self._state = _State(time, value.copy(), _copy(jacobian), speed)
            return
        period = time - state.time
        if period <= 0.0:
            return
        velocity = (value - state.value) / period  # B x K x 2, from the previous estimate
        raw_speed = np.linalg.norm(velocity, axis=-1, keepdims=True)  # B x K x 1
        speed_weight = _sample_weight(period, SPEED_CUTOFF_HZ)
        speed = speed_weight * raw_speed + (1.0 - speed_weight) * state.speed
        w = np.asarray(weights, np.float64)
        smoothed = w * value + (1.0 - w) * state.value
        smoothed_jacobian = None
        if jacobian is not None and state.jacobian is not None:
            smoothed_jacobian = w[..., None] * jacobian + (1.0 - w[..., None]) * state.jacobian
        self._state = _State(time, smoothed, smoothed_jacobian, speed)

    @property
    def smoothed(self) -> KeypointArrays | None:
        """The latest smoothed driving keypoints (float32), None before the first frame."""
        state = self._state
        if state is None:
            return None
        jacobian = None if state.jacobian is None else state.jacobian.astype(np.float32)
        return KeypointArrays(state.value.astype(np.float32), jacobian)


def _sample_weight(period: float, cutoff):
    """The One Euro weight of a new sample ``period`` s after the last at ``cutoff`` Hz:
    a first-order low-pass, 1 / (1 + 1 / (2 pi fc T))."""
    rate = 2.0 * math.pi * cutoff * period
    return rate / (rate + 1.0)


def _copy(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.copy()
