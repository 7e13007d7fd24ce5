"""The live loop's actions: what each :class:`~live.controls.Action` changes.

One function for every controller: the preview window's keys, a test, or a control page all
post actions with :meth:`live.loop.LiveLoop.post`, and the loop applies them here, on its
animation thread, before the next frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
        _change(loop, _SETTINGS["scale"], action, value)
    elif action in (
        Action.SMOOTHING_STRONGER,
        Action.SMOOTHING_WEAKER,
        Action.SET_MOTION_SMOOTHING,
    ):
        _change(loop, _SETTINGS["smoothing"], action, value)
    elif action is Action.ADD_AVATAR and value is not None:
        loop.avatars.append(value)  # type: ignore[arg-type]  (the policy's list too)
    elif action is Action.SET_MARKER and callable(value):
        loop.marker = value


@dataclass(frozen=True)
class _Setting:
    """A numeric motion control: set to a value, or stepped by keys, within a range."""

    name: str  # for the log line
    attribute: str  # the LiveLoop property that reads it
    apply: str  # the FramePolicy method that sets it
    limits: tuple[float, float]  # the range values are clamped to
    step: float  # one key press
    set_action: Action  # comes with the value
    up: Action  # one step up; the third action of the setting steps down
    shown: Callable[[float], str]  # the value as the log shows it


_SETTINGS = {
    "scale": _Setting(
        "motion strength",
        "motion_scale",
        "set_motion_scale",
        MOTION_SCALE_RANGE,
        MOTION_SCALE_STEP,
        Action.SET_MOTION_SCALE,
        Action.MOTION_STRONGER,
        lambda value: f"x{value:.1f}",
    ),
    "smoothing": _Setting(
        "motion smoothing",
        "motion_smoothing",
        "set_motion_smoothing",
        SMOOTHING_RANGE,
        SMOOTHING_STEP,
        Action.SET_MOTION_SMOOTHING,
        Action.SMOOTHING_STRONGER,
        lambda value: f"{value:.1f}" if value > 0 else "off",
    ),
}


def _change(loop: LiveLoop, setting: _Setting, action: Action, value: object) -> None:
    """Set ``setting`` to ``value`` (its set action) or step it, clamped to its range."""
    if action is setting.set_action:
        if not isinstance(value, int | float):
            return
        new = float(value)
    else:
        step = setting.step if action is setting.up else -setting.step
        new = round(getattr(loop, setting.attribute) + step, 6)
    low, high = setting.limits
    new = min(high, max(low, new))
    getattr(loop.policy, setting.apply)(new)
    log.info("%s %s", setting.name, setting.shown(new))
