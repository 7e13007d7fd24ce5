"""Test doubles shared by the live tests: synthetic images, frame sources and a fake camera."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from live.errors import CameraError
from live.sources import FrameSource


def solid(value: tuple[int, int, int], width: int = 32, height: int = 24) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = value
    return image


def write_png(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path)


class CountingSource(FrameSource):
    """Frames 0..count-1 whose pixels hold their index; optional delay per read."""

    def __init__(self, count: int, delay: float = 0.0, fps: float | None = None) -> None:
        super().__init__()
        self._count = count
        self._delay = delay
        self._produced = 0
        self._fps = fps
        self._size = (4, 4)
        self._frame_count = count
        self.released = False

    @property
    def name(self) -> str:
        return "counting"

    def _grab(self) -> np.ndarray | None:
        if self._produced >= self._count:
            return None
        if self._delay:
            time.sleep(self._delay)
        image = np.full((4, 4, 3), self._produced % 256, np.uint8)
        self._produced += 1
        return image

    def _release(self) -> None:
        self.released = True


class FlakyCamera(FrameSource):
    """A live source that delivers frames, fails, refuses to reopen twice, then recovers."""

    is_live = True

    def __init__(self, fail_after: int, failed_reopens: int, raise_on_fail: bool) -> None:
        super().__init__()
        self._fail_after = fail_after
        self._failed_reopens = failed_reopens
        self._raise_on_fail = raise_on_fail
        self.reads = 0
        self.reopen_calls = 0
        self.release_calls = 0
        self.broken = False

    @property
    def name(self) -> str:
        return "flaky"

    def _grab(self) -> np.ndarray | None:
        time.sleep(0.002)
        if self.broken:
            return None
        self.reads += 1
        if self.reads == self._fail_after:
            self.broken = True
            if self._raise_on_fail:
                raise RuntimeError("device unplugged")
            return None
        return np.zeros((4, 4, 3), np.uint8)

    def _release(self) -> None:
        self.release_calls += 1

    def reopen(self) -> None:
        self.reopen_calls += 1
        if self.reopen_calls <= self._failed_reopens:
            raise CameraError("still unplugged")
        self.broken = False
        self._closed = False


class FakeCapture:
    """Stand-in for cv2.VideoCapture: delivers 640x480 at 30 fps whatever is requested."""

    def __init__(self, opened: bool = True, frames: int = 1000, decode_delay: float = 0.0) -> None:
        self.opened = opened
        self.frames = frames
        self.decode_delay = decode_delay  # seconds each retrieve() (the decoding) takes
        self.requested: dict[int, float] = {}
        self.released = False
        self.grabbed = 0  # frames grabbed
        self.retrieved = 0  # frames decoded

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.requested[prop] = value
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        out = image if image is not None else np.empty((480, 640, 3), np.uint8)
        out[:] = (0, 0, 255)  # BGR red
        return True, out

    def grab(self) -> bool:
        if self.frames <= 0:
            return False
        self.frames -= 1
        self.grabbed += 1
        return True

    def retrieve(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        if self.decode_delay:
            time.sleep(self.decode_delay)
        self.retrieved += 1
        out = image if image is not None else np.empty((480, 640, 3), np.uint8)
        out[:] = (0, 0, 255)  # BGR red
        return True, out

    def release(self) -> None:
        self.released = True


def encode_index(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame that encodes ``index`` in every pixel (red = low byte, green = high byte) and
    has a blue band on its left eighth, to tell a mirrored image from a plain one."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = index % 256
    image[..., 1] = index // 256
    image[:, : width // 8, 2] = 255
    return image


def decode_index(image: np.ndarray) -> int:
    """The index :func:`encode_index` put in an image (read at its centre; survives resizing,
    mirroring and letterboxing)."""
    height, width = image.shape[:2]
    red, green = (int(v) for v in image[height // 2, width // 2, :2])
    return red + 256 * green


class IndexedSource(FrameSource):
    """``count`` frames made by :func:`encode_index`, each a new array, as fast as read."""

    def __init__(self, count: int, fps: float = 30.0) -> None:
        super().__init__()
        self._count = count
        self._produced = 0
        self._fps = fps
        self._size = (64, 48)
        self._frame_count = count

    @property
    def name(self) -> str:
        return "indexed"

    def _grab(self) -> np.ndarray | None:
        if self._produced >= self._count:
            return None
        self._produced += 1
        return encode_index(self._produced - 1)

    def _release(self) -> None:
        pass
