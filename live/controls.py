"""Controls of the live loop: the actions it takes, and one table from the preview window's
keys to them.

Anything can drive the loop with :meth:`live.loop.LiveLoop.post` (thread-safe): the preview
window's keys, a test, or a control page. Actions that take a value (an avatar index, a motion
strength) get it as the second argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    """What a key press (or another controller) asks the live loop to do."""

    NEXT_AVATAR = "next_avatar"
    PREV_AVATAR = "prev_avatar"
    SELECT_AVATAR = "select_avatar"  # comes with the 0-based avatar index
    RECALIBRATE = "recalibrate"
    TOGGLE_BEST_FRAME = "toggle_best_frame"
    TOGGLE_MIRROR = "toggle_mirror"
    TOGGLE_OVERLAY = "toggle_overlay"
    TOGGLE_STATS = "toggle_stats"
    TOGGLE_PAUSE = "toggle_pause"
    MOTION_STRONGER = "motion_stronger"  # motion strength + MOTION_SCALE_STEP
    MOTION_WEAKER = "motion_weaker"  # motion strength - MOTION_SCALE_STEP
    SET_MOTION_SCALE = "set_motion_scale"  # comes with the strength (a float)
    SMOOTHING_STRONGER = "smoothing_stronger"  # keypoint smoothing + SMOOTHING_STEP
    SMOOTHING_WEAKER = "smoothing_weaker"  # keypoint smoothing - SMOOTHING_STEP
    SET_MOTION_SMOOTHING = "set_motion_smoothing"  # comes with the smoothing (a float, 0-1)
    ADD_AVATAR = "add_avatar"  # comes with a live.pipeline.PreparedAvatar (the control page)
    SET_MARKER = "set_marker"  # comes with a new live.marking.FrameMarker (another label)
    QUIT = "quit"


#: How much one key press changes the motion strength.
MOTION_SCALE_STEP = 0.1
#: How much one key press changes the keypoint smoothing.
SMOOTHING_STEP = 0.1


_SPECIAL_KEYS = {"Esc": 27, "Space": 32}


@dataclass(frozen=True)
class KeyBinding:
    """Keys that trigger one action."""

    keys: tuple[str, ...]  # single characters, or "Esc" / "Space"
    action: Action  # the action they trigger
    description: str  # shown in the help text

    def codes(self) -> tuple[int, ...]:
        """Key codes as cv2.waitKeyEx reports them."""
        return tuple(_SPECIAL_KEYS.get(key, ord(key[0])) for key in self.keys)


# Letters are lower case only: cv2.waitKey masks arrow keys to codes of upper-case letters.
KEY_BINDINGS: tuple[KeyBinding, ...] = (
    KeyBinding(("]", "d"), Action.NEXT_AVATAR, "next avatar"),
    KeyBinding(("[", "a"), Action.PREV_AVATAR, "previous avatar"),
    KeyBinding(tuple("123456789"), Action.SELECT_AVATAR, "select avatar 1-9"),
    KeyBinding(
        ("c",), Action.RECALIBRATE, "recalibrate: your current pose becomes the neutral one"
    ),
    KeyBinding(("b",), Action.TOGGLE_BEST_FRAME, "best-frame mode on/off"),
    KeyBinding(("m",), Action.TOGGLE_MIRROR, "mirror the camera on/off"),
    KeyBinding(("o",), Action.TOGGLE_OVERLAY, "avatar overlay on the camera view (to line up)"),
    KeyBinding(("s",), Action.TOGGLE_STATS, "FPS and latency overlay on/off"),
    KeyBinding(("p", "Space"), Action.TOGGLE_PAUSE, "pause/resume"),
    KeyBinding(("=", "+"), Action.MOTION_STRONGER, "stronger motion (--motion-scale + 0.1)"),
    KeyBinding(("-",), Action.MOTION_WEAKER, "weaker motion (--motion-scale - 0.1)"),
    KeyBinding((".",), Action.SMOOTHING_STRONGER, "steadier motion (--motion-smoothing + 0.1)"),
    KeyBinding((",",), Action.SMOOTHING_WEAKER, "quicker motion (--motion-smoothing - 0.1)"),
    KeyBinding(("q", "Esc"), Action.QUIT, "quit"),
)


def _build_table() -> dict[int, tuple[Action, int | None]]:
    table: dict[int, tuple[Action, int | None]] = {}
    for binding in KEY_BINDINGS:
        for position, code in enumerate(binding.codes()):
            index = position if binding.action is Action.SELECT_AVATAR else None
            if code in table:
                raise RuntimeError(f"key code {code} is bound twice")
            table[code] = (binding.action, index)
    return table


_TABLE = _build_table()


def action_for_key(code: int | None) -> tuple[Action, int | None] | None:
    """(action, avatar index or None) for a key code, or None for unbound keys / no key.

    Key ``1`` selects avatar index 0, ..., key ``9`` index 8.
    """
    if code is None or code < 0:
        return None
    return _TABLE.get(code)


def _key_label(keys: tuple[str, ...]) -> str:
    if len(keys) > 2 and all(key.isdigit() for key in keys):
        return f"{keys[0]}-{keys[-1]}"
    return " or ".join(keys)


def controls_help() -> str:
    """Key bindings as text, for start-up and for argparse's epilog (use a raw formatter)."""
    labels = [_key_label(binding.keys) for binding in KEY_BINDINGS]
    width = max(len(label) for label in labels)
    lines = ["Keys (in the preview window):"]
    lines += [
        f"  {label:<{width}}  {binding.description}"
        for label, binding in zip(labels, KEY_BINDINGS, strict=True)
    ]
    return "\n".join(lines)
