"""Tests for live.preview: the composed picture, and the window under Xvfb."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from live.errors import DisplayError, SettingError
from live.framing import CropBox
from live.preview import (
    BOX_COLOR,
    PANEL_COLOR,
    STATUS_BAR_HEIGHT,
    PreviewWindow,
    compose_preview,
    display_available,
)
from tests.live.conftest import run_on_display

ROOT = Path(__file__).resolve().parents[2]
GRAY = (90, 90, 90)
AVATAR = (200, 40, 160)


def camera(width: int = 640, height: int = 480) -> np.ndarray:
    return np.full((height, width, 3), GRAY, np.uint8)


def avatar(size: int = 256) -> np.ndarray:
    return np.full((size, size, 3), AVATAR, np.uint8)


# --- compose_preview ----------------------------------------------------------------------


def test_layout_is_camera_then_avatar() -> None:
    out = compose_preview(camera(), avatar(), None, {}, "", show_stats=False, height=240)
    assert out.shape == (240, 320 + 240, 3) and out.dtype == np.uint8
    assert np.all(out[: 240 - STATUS_BAR_HEIGHT, :320] == GRAY)
    assert np.all(out[:, 320:] == AVATAR)


def test_crop_box_is_drawn_where_it_is() -> None:
    box = CropBox(x=200, y=100, size=200)  # camera pixels; the panel is half size
    out = compose_preview(camera(), avatar(), box, {}, "", show_stats=False, height=240)
    assert out[50, 120].tolist() == list(BOX_COLOR)  # top-left corner at (100, 50)
    assert out[100, 100].tolist() == list(BOX_COLOR)  # left edge
    assert out[150, 150].tolist() == list(BOX_COLOR)  # bottom edge at y = 150
    assert out[100, 200].tolist() == list(BOX_COLOR)  # right edge at x = 200
    assert out[100, 150].tolist() == list(GRAY)  # inside stays untouched
    assert out[20, 20].tolist() == list(GRAY)  # outside too


def test_status_and_stats_text_are_drawn() -> None:
    stats = {"fps": 24.5, "detect": 4.2, "generator": 310.0}
    plain = compose_preview(camera(), avatar(), None, stats, "", show_stats=False, height=240)
    shown = compose_preview(camera(), avatar(), None, stats, "tracking", height=240)
    bar = slice(240 - STATUS_BAR_HEIGHT, 240)
    assert np.all(plain[bar, :320] == PANEL_COLOR)
    text_pixels = np.any(shown[bar, :320] != PANEL_COLOR, axis=-1)
    assert text_pixels[:, :100].sum() > 20  # "tracking" written at the left of the bar
    corner = shown[0:70, 0:160]
    assert np.any(np.all(corner == PANEL_COLOR, axis=-1))  # stats box
    assert np.any(np.all(corner == (255, 255, 255), axis=-1))  # stats text
    assert np.all(plain[0:70, 0:160] == GRAY)
    assert np.array_equal(shown[:, 320:], plain[:, 320:])  # avatar panel untouched


def test_more_stats_make_a_taller_box() -> None:
    one = compose_preview(camera(), avatar(), None, {"fps": 30.0}, "", height=240)
    three = compose_preview(
        camera(), avatar(), None, {"fps": 30.0, "a": 1.0, "b": 2.0}, "", height=240
    )
    assert np.all(one[40:50, 10:40] == GRAY)
    assert not np.all(three[40:50, 10:40] == GRAY)


def test_overlay_blends_the_avatar_into_the_crop_box() -> None:
    box = CropBox(x=200, y=100, size=200)
    out = compose_preview(
        camera(),
        avatar(),
        box,
        {},
        "",
        show_stats=False,
        overlay=True,
        overlay_alpha=0.5,
        height=240,
    )
    blended = (np.array(GRAY) + np.array(AVATAR)) / 2
    assert np.allclose(out[100, 150], blended, atol=1)
    assert out[20, 20].tolist() == list(GRAY)
    off = compose_preview(camera(), avatar(), box, {}, "", show_stats=False, height=240)
    assert off[100, 150].tolist() == list(GRAY)


def test_overlay_with_a_box_past_the_edge() -> None:
    box = CropBox(x=-100, y=-100, size=300)
    out = compose_preview(
        camera(),
        avatar(),
        box,
        {},
        "",
        show_stats=False,
        overlay=True,
        overlay_alpha=1.0,
        height=240,
    )
    assert out[10, 10].tolist() == list(AVATAR)
    assert out[200, 300].tolist() == list(GRAY)


def test_missing_avatar_frame_and_out_reuse() -> None:
    first = compose_preview(camera(), None, None, {}, "waiting", height=240)
    assert np.all(first[:20, 320:] == 0)
    again = compose_preview(camera(), avatar(), None, {}, "ok", height=240, out=first)
    assert again is first
    assert np.all(first[:, 320:] == AVATAR)
    resized = compose_preview(camera(320, 240), avatar(), None, {}, "ok", height=120, out=first)
    assert resized.shape == (120, 160 + 120, 3)


def test_too_small_height_is_rejected() -> None:
    with pytest.raises(SettingError, match="too small"):
        compose_preview(camera(), avatar(), None, {}, "", height=20)


# --- display detection and the real window ------------------------------------------------


def test_no_display_means_no_preview(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False
    with pytest.raises(DisplayError, match="--no-preview"):
        PreviewWindow()


def test_unreachable_display_is_detected_without_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setenv("DISPLAY", ":97")  # no X server there: OpenCV's Qt would abort
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False


# The window runs in a child process: OpenCV's Qt backend aborts a process whose X server
# goes away, which would take pytest down when the Xvfb fixture stops.
WINDOW_SCRIPT = """
import json
import numpy as np
import cv2
from live.framing import CropBox
from live.preview import PreviewWindow

report = {}
window = PreviewWindow("avatarcam test", height=240)
report["closed_before"] = window.closed
frame = np.full((480, 640, 3), 90, np.uint8)
avatar = np.full((256, 256, 3), 200, np.uint8)
keys = [window.show(frame, avatar, CropBox(200, 100, 200), {"fps": 30.0}, "tracking")
        for _ in range(5)]
report["keys"] = keys
report["visible"] = cv2.getWindowProperty("avatarcam test", cv2.WND_PROP_VISIBLE)
report["rect"] = list(cv2.getWindowImageRect("avatarcam test"))
report["closed_while_open"] = window.closed
cv2.destroyWindow("avatarcam test")  # as if the user closed it
cv2.waitKey(1)
report["closed_after_destroy"] = window.closed
report["show_after_close"] = window.show(frame, avatar, None, {}, "")
window.close()
second = PreviewWindow("second", height=240)
second.show(frame, None, None, {}, "")
second.close()
report["second_closed"] = second.closed
print("REPORT " + json.dumps(report))
"""


@pytest.mark.display
def test_window_opens_shows_and_closes_under_xvfb(xvfb_display: str) -> None:
    env = {**os.environ, "DISPLAY": xvfb_display}
    env.pop("WAYLAND_DISPLAY", None)
    probe = subprocess.run(
        [sys.executable, "-c", "from live.preview import display_available as d; print(d())"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.stdout.strip() == "True", probe.stderr
    report = run_on_display(WINDOW_SCRIPT, xvfb_display, timeout=120)
    assert report["closed_before"] is False
    assert report["keys"] == [None] * 5
    assert report["visible"] >= 1
    assert report["rect"][2:] == [320 + 240, 240]  # the composed picture, actual size
    assert report["closed_while_open"] is False
    assert report["closed_after_destroy"] is True
    assert report["show_after_close"] is None
    assert report["second_closed"] is True
