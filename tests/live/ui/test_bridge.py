"""The frame bridge between the loop and the page: no work while nobody watches, the newest
frame encoded for the views watched, buffers of its own."""

from __future__ import annotations

import time

import cv2
import numpy as np

from live.framing import CropBox
from live.sinks import OutputFrame
from live.ui.bridge import FrameBridge


def _frame(value: int, size: int = 64) -> OutputFrame:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2] = value  # left half bright, right half dark: not flat
    camera = np.full((120, 160, 3), 90, np.uint8)
    return OutputFrame(image, 0.0, camera=camera, box=CropBox(10, 10, 60), status="ok")


def test_nothing_is_copied_or_encoded_while_no_browser_watches() -> None:
    bridge = FrameBridge(lambda: 0, (128, 72))
    try:
        for value in range(5):
            bridge.send(_frame(200 + value))
        status, _, frames = bridge.status()
        assert (status, frames) == ("ok", 5)
        assert bridge._seq == 0  # no frame was copied for the page
        # A browser asking for a view gets nothing old: only frames sent from then on.
        assert bridge.next_jpeg("obs", 0, timeout=0.3) is None
    finally:
        bridge.close()


def test_watched_views_get_the_newest_frame_as_jpeg() -> None:
    avatar = [0]
    bridge = FrameBridge(lambda: avatar[0], (128, 72))
    try:
        bridge.watch("obs")
        bridge.watch("live")
        frame = _frame(250)
        bridge.send(frame)
        frame.image[:] = 0  # the loop reuses its buffer: the bridge kept its own copy
        obs = bridge.next_jpeg("obs", 0, timeout=5)
        assert obs is not None and obs.seq == 1 and obs.avatar == 0
        picture = cv2.imdecode(np.frombuffer(obs.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (72, 128, 3)  # the virtual camera's size
        assert picture[36, 50].mean() > 200 and picture[36, 80].mean() < 40  # letterboxed copy
        live = bridge.next_jpeg("live", 0, timeout=5)
        assert live is not None
        picture = cv2.imdecode(np.frombuffer(live.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (360, 480 + 360, 3)  # camera scaled to 360 high | avatar
        assert bridge.delay_ms is not None and 0 < bridge.delay_ms < 5000
        avatar[0] = 1
        bridge.send(_frame(100))
        newer = bridge.next_jpeg("obs", obs.seq, timeout=5)
        assert newer is not None and newer.seq == 2 and newer.avatar == 1
    finally:
        bridge.close()
    assert bridge.next_jpeg("obs", 0, timeout=5) is None  # closed: waiting streams end


def test_send_does_not_wait_for_a_slow_reader() -> None:
    bridge = FrameBridge(lambda: 0, (1280, 720))
    try:
        bridge.watch("obs")
        start = time.perf_counter()
        for value in range(200):
            bridge.send(_frame(value % 256))
        per_frame = (time.perf_counter() - start) / 200
        assert per_frame < 0.005, f"send took {per_frame * 1000:.2f} ms a frame"
        assert bridge._seq == 200  # every frame was handed over; the encoder takes the newest
        # The rate cap delays the newest frame, it never loses it.
        final = bridge.next_jpeg("obs", 199, timeout=5)
        assert final is not None and final.seq == 200
    finally:
        bridge.close()
