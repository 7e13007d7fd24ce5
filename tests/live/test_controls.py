"""Tests for live.controls: key table, lookup and help text."""

from __future__ import annotations

import pytest

from live.controls import KEY_BINDINGS, Action, action_for_key, controls_help

DOCUMENTED = {
    "]": (Action.NEXT_AVATAR, None),
    "d": (Action.NEXT_AVATAR, None),
    "[": (Action.PREV_AVATAR, None),
    "a": (Action.PREV_AVATAR, None),
    "c": (Action.RECALIBRATE, None),
    "b": (Action.TOGGLE_BEST_FRAME, None),
    "m": (Action.TOGGLE_MIRROR, None),
    "o": (Action.TOGGLE_OVERLAY, None),
    "s": (Action.TOGGLE_STATS, None),
    "p": (Action.TOGGLE_PAUSE, None),
    " ": (Action.TOGGLE_PAUSE, None),
    "q": (Action.QUIT, None),
    "\x1b": (Action.QUIT, None),
    "=": (Action.MOTION_STRONGER, None),
    "+": (Action.MOTION_STRONGER, None),
    "-": (Action.MOTION_WEAKER, None),
}


@pytest.mark.parametrize(("key", "expected"), sorted(DOCUMENTED.items()))
def test_documented_keys(key: str, expected: tuple[Action, int | None]) -> None:
    assert action_for_key(ord(key)) == expected


@pytest.mark.parametrize("digit", range(1, 10))
def test_digits_select_avatars(digit: int) -> None:
    assert action_for_key(ord(str(digit))) == (Action.SELECT_AVATAR, digit - 1)


@pytest.mark.parametrize(
    "code", [None, -1, ord("0"), ord("x"), ord("Q"), ord("D"), 13, 65361, 0x100000 + ord("q")]
)
def test_unknown_keys(code: int | None) -> None:
    assert action_for_key(code) is None


def test_every_action_has_a_key() -> None:
    bound = {binding.action for binding in KEY_BINDINGS}
    # Actions that take a value (a motion strength, an avatar, a marker): a controller (the
    # control page, not a key) sends them.
    assert bound == set(Action) - {
        Action.SET_MOTION_SCALE,
        Action.SET_MOTION_SMOOTHING,
        Action.ADD_AVATAR,
        Action.SET_MARKER,
    }


def test_help_lists_every_binding() -> None:
    text = controls_help()
    lines = text.splitlines()
    assert lines[0] == "Keys (in the preview window):"
    assert len(lines) == 1 + len(KEY_BINDINGS)
    for binding, line in zip(KEY_BINDINGS, lines[1:], strict=True):
        assert binding.description in line
    for label in ("] or d", "[ or a", "1-9", "p or Space", "q or Esc"):
        assert any(line.strip().startswith(label) for line in lines), label
    for letter in "cbmos":
        assert any(line.strip().startswith(f"{letter} ") for line in lines), letter
    columns = {
        line.index(binding.description)
        for binding, line in zip(KEY_BINDINGS, lines[1:], strict=True)
    }
    assert len(columns) == 1  # descriptions are aligned
