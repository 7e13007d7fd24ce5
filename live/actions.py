"""The live loop's actions: what each :class:`~live.controls.Action` changes.

One function for every controller: the preview window's keys, a test, or a control page all
post actions with :meth:`live.loop.LiveLoop.post`, and the loop applies them here, on its
animation thread, before the next frame.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .animator import MOTION_SCALE_RANGE
from .controls import MOTION_SCALE_STEP, SMOOTHING_STEP, Action
from .smoothing import SMOOTHING_RANGE

if TYPE_CHECKING:
    from .loop import LiveLoop

log = logging.getLogger("avatarcam")


def apply_action(loop: LiveLoop, action: Action, value: object = None) -> None:
    """Apply one action to ``loop`` (on its animation thread: use LiveLoop.post from
    elsewhere). Raises EngineUnavailable when the engine call behind it failed."""
    policy = loop.policy
    if action is Action.QUIT:
        loop.stop()
    elif action is Action.NEXT_AVATAR:
        policy.step_avatar(1)
    elif action is Action.PREV_AVATAR:
        policy.step_avatar(-1)
    elif action is Action.SELECT_AVATAR and isinstance(value, int):
        policy.select_avatar(value)
    elif action is Action.RECALIBRATE:
        policy.restart_calibration()
        redetect = getattr(loop.cropper, "redetect", None)  # the new reference: a fresh box
        if redetect is not None:
            redetect()
        log.info("recalibrating: the next frame with a face is the new reference")
    elif action is Action.TOGGLE_BEST_FRAME:
        policy.toggle_best_frame()
        log.info("best-frame mode %s", "on" if policy.best_frame else "off")
    elif action is Action.TOGGLE_MIRROR:
        # The framing stage resets its face tracker when it sees the change; the motion
        # reference was taken on the other view, so a new one is taken.
        loop.mirror = not loop.mirror
        policy.restart_calibration()
        log.info("mirror %s", "on" if loop.mirror else "off")
    elif action is Action.TOGGLE_OVERLAY and loop.preview is not None:
        loop.preview.overlay = not loop.preview.overlay
    elif action is Action.TOGGLE_STATS and loop.preview is not None:
        loop.preview.show_stats = not loop.preview.show_stats
    elif action is Action.TOGGLE_PAUSE:
        policy.toggle_pause()
        log.info("paused" if policy.paused else "resumed")
    elif action in (Action.MOTION_STRONGER, Action.MOTION_WEAKER, Action.SET_MOTION_SCALE):
        _set_motion_scale(loop, action, value)
    elif action in (
        Action.SMOOTHING_STRONGER,
        Action.SMOOTHING_WEAKER,
        Action.SET_MOTION_SMOOTHING,
    ):
        _set_motion_smoothing(loop, action, value)
    elif action is Action.ADD_AVATAR and value is not None:
        loop.avatars.append(value)  # type: ignore[arg-type]  (the policy's list too)
    elif action is Action.SET_MARKER and callable(value):
        loop.marker = value


def _stepped(
    current: float, action: Action, value: object, setter: Action, up: Action, step: float
) -> float | None:
    """The new setting: ``value`` for the set action, else ``current`` one step up or down;
    None when a set action came without a number."""
    if action is setter:
        return float(value) if isinstance(value, int | float) else None
    return round(current + (step if action is up else -step), 6)


def _set_motion_scale(loop: LiveLoop, action: Action, value: object) -> None:
    low, high = MOTION_SCALE_RANGE
    scale = _stepped(
        loop.motion_scale,
        action,
        value,
        Action.SET_MOTION_SCALE,
        Action.MOTION_STRONGER,
        MOTION_SCALE_STEP,
    )
    if scale is None:
        return
    scale = min(high, max(low, scale))
    loop.policy.set_motion_scale(scale)
    log.info("motion strength x%.1f", scale)


def _set_motion_smoothing(loop: LiveLoop, action: Action, value: object) -> None:
    low, high = SMOOTHING_RANGE
    strength = _stepped(
        loop.motion_smoothing,
        action,
        value,
        Action.SET_MOTION_SMOOTHING,
        Action.SMOOTHING_STRONGER,
        SMOOTHING_STEP,
    )
    if strength is None:
        return
    strength = min(high, max(low, strength))
    loop.policy.set_motion_smoothing(strength)
    log.info("motion smoothing %s", f"{strength:.1f}" if strength > 0 else "off")
