"""Tests for live.virtualcam: frame fitting, the camera wrapper and the setup messages."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from export.errors import MissingDependencyError
from live.errors import SettingError, VirtualCameraError
from live.virtualcam import VirtualCamera, VirtualCameraConfig, fit_frame


class FakeCamera:
    """Records what pyvirtualcam.Camera would receive."""

    instances: ClassVar[list[FakeCamera]] = []

    def __init__(self, width: int, height: int, fps: float, device: str | None) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.device = device or "/dev/video42"
        self.frames: list[np.ndarray] = []
        self.sleeps = 0
        self.closed = False
        FakeCamera.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.shape == (self.height, self.width, 3)  # what pyvirtualcam checks
        self.frames.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        self.sleeps += 1

    def close(self) -> None:
        self.closed = True


def failing_factory(message: str) -> Callable[[int, int, float, str | None], FakeCamera]:
    def factory(width: int, height: int, fps: float, device: str | None) -> FakeCamera:
        raise RuntimeError(message)

    return factory


# --- fit_frame ----------------------------------------------------------------------------


def test_letterbox_keeps_aspect_with_black_bars() -> None:
    square = np.full((100, 100, 3), (10, 200, 30), np.uint8)
    out = fit_frame(square, 160, 90, "letterbox")
    assert out.shape == (90, 160, 3) and out.dtype == np.uint8
    assert np.all(out[:, :35] == 0) and np.all(out[:, 125:] == 0)
    assert np.all(out[:, 35:125] == (10, 200, 30))


def test_letterbox_of_a_wide_frame_adds_bars_top_and_bottom() -> None:
    wide = np.full((50, 200, 3), 255, np.uint8)
    out = fit_frame(wide, 100, 100, "letterbox")
    assert np.all(out[:37] == 0) and np.all(out[62:] == 0)
    assert np.all(out[37:62] == 255)


def test_crop_fills_the_frame_from_the_centre() -> None:
    square = np.zeros((100, 100, 3), np.uint8)
    square[:20] = (255, 0, 0)  # a 16:9 centre crop keeps rows 22..77: no red, no blue
    square[20:80] = (0, 255, 0)
    square[80:] = (0, 0, 255)
    out = fit_frame(square, 160, 90, "crop")
    assert out.shape == (90, 160, 3)
    assert np.all(out == (0, 255, 0))
    tall = np.zeros((100, 40, 3), np.uint8)
    tall[:, 20:] = 255
    filled = fit_frame(tall, 50, 50, "crop")
    assert np.all(filled[:, :24] == 0) and np.all(filled[:, 26:] == 255)


def test_fit_frame_reuses_out_and_clears_old_bars() -> None:
    out = np.full((90, 160, 3), 99, np.uint8)
    result = fit_frame(np.full((100, 100, 3), 7, np.uint8), 160, 90, "letterbox", out=out)
    assert result is out
    assert np.all(out[:, :35] == 0) and np.all(out[:, 35:125] == 7)
    with pytest.raises(ValueError, match="out must be"):
        fit_frame(np.zeros((10, 10, 3), np.uint8), 160, 90, out=np.zeros((90, 160), np.uint8))


# --- VirtualCamera ------------------------------------------------------------------------


def test_frames_arrive_at_the_requested_size_and_count() -> None:
    FakeCamera.instances.clear()
    config = VirtualCameraConfig(width=320, height=180, fps=25, device="/dev/video7")
    with VirtualCamera(config, camera_factory=FakeCamera) as camera:
        assert camera.device == "/dev/video7" and camera.fps == 25
        for value in range(5):
            camera.send(np.full((256, 256, 3), value * 40, np.uint8))
        camera.send(np.zeros((480, 640, 3), np.uint8))
        assert camera.frames_sent == 6
    (fake,) = FakeCamera.instances
    assert (fake.width, fake.height, fake.fps) == (320, 180, 25)
    assert len(fake.frames) == 6
    assert all(frame.shape == (180, 320, 3) and frame.dtype == np.uint8 for frame in fake.frames)
    assert [int(frame[90, 160, 0]) for frame in fake.frames] == [0, 40, 80, 120, 160, 0]
    assert fake.sleeps == 0  # never blocks unless asked
    assert fake.closed


def test_rgb_channel_order_is_kept() -> None:
    FakeCamera.instances.clear()
    config = VirtualCameraConfig(width=64, height=64, fit="crop")
    with VirtualCamera(config, camera_factory=FakeCamera) as camera:
        camera.send(np.full((32, 32, 3), (255, 0, 0), np.uint8))
    assert FakeCamera.instances[0].frames[0][10, 10].tolist() == [255, 0, 0]


def test_fps_falls_back_to_the_source_then_30() -> None:
    with VirtualCamera(camera_factory=FakeCamera, source_fps=24.0) as camera:
        assert camera.fps == 24.0
    with VirtualCamera(camera_factory=FakeCamera) as camera:
        assert camera.fps == 30.0


def test_pace_waits_for_the_next_frame_slot() -> None:
    FakeCamera.instances.clear()
    with VirtualCamera(camera_factory=FakeCamera, pace=True) as camera:
        camera.send(np.zeros((8, 8, 3), np.uint8))
        camera.send(np.zeros((8, 8, 3), np.uint8))
    assert FakeCamera.instances[0].sleeps == 2


def test_send_after_close_fails() -> None:
    camera = VirtualCamera(camera_factory=FakeCamera)
    camera.close()
    camera.close()
    with pytest.raises(RuntimeError, match="closed"):
        camera.send(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"width": 641}, "width 641 is invalid"),
        ({"height": 0}, "height 0 is invalid"),
        ({"fps": 0.0}, "fps 0.0 is invalid"),
        ({"fit": "stretch"}, "Unknown fit mode 'stretch'"),
    ],
)
def test_config_validation(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(SettingError, match=expected):
        VirtualCameraConfig(**kwargs)  # type: ignore[arg-type]


# --- errors and setup instructions --------------------------------------------------------


def loopback_devices() -> list[Path]:
    folder = Path("/sys/devices/virtual/video4linux")
    return list(folder.glob("video*")) if folder.is_dir() else []


@pytest.mark.skipif(platform.system() != "Linux", reason="v4l2loopback is Linux only")
def test_real_pyvirtualcam_error_becomes_linux_instructions() -> None:
    if loopback_devices():
        pytest.skip("a v4l2loopback device exists here, so pyvirtualcam opens it")
    with pytest.raises(VirtualCameraError) as info:
        VirtualCamera(VirtualCameraConfig(width=64, height=48, fps=30))
    message = str(info.value)
    assert "modprobe v4l2loopback'" in message  # pyvirtualcam's own text is kept
    assert "sudo apt install v4l2loopback-dkms" in message
    assert "v4l2loopback-utils" in message
    assert 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Avatarcam"' in message
    assert "--virtual-cam-device /dev/videoN" in message
    assert "--no-virtual-cam" in message


@pytest.mark.skipif(platform.system() != "Linux", reason="v4l2loopback is Linux only")
def test_real_pyvirtualcam_error_for_a_missing_device() -> None:
    with pytest.raises(VirtualCameraError) as info:
        VirtualCamera(VirtualCameraConfig(width=64, height=48, fps=30, device="/dev/video99"))
    message = str(info.value)
    assert "Device /dev/video99 does not exist" in message
    assert "/dev/video99 is not one" in message
    assert "sudo modprobe v4l2loopback" in message


def test_windows_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Windows")
    original = "'obs' backend: OBS Virtual Camera device not found! Did you install OBS?"
    with pytest.raises(VirtualCameraError) as info:
        VirtualCamera(camera_factory=failing_factory(original))
    message = str(info.value)
    assert original in message
    assert "OBS Studio >= 26" in message and "Start Virtual Camera" in message
    assert "--no-virtual-cam" in message
    assert "modprobe" not in message


def test_macos_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with pytest.raises(VirtualCameraError) as info:
        VirtualCamera(camera_factory=failing_factory("'obs' backend: virtual camera not found"))
    message = str(info.value)
    assert "virtual camera not found" in message
    assert "OBS Studio >= 30" in message and "system extension" in message
    assert "--no-virtual-cam" in message
    assert "apt install" not in message


def test_missing_pyvirtualcam_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyvirtualcam(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyvirtualcam":
            raise ImportError("No module named 'pyvirtualcam'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyvirtualcam)
    with pytest.raises(MissingDependencyError) as info:
        VirtualCamera()
    assert "pip install avatarcam" in str(info.value)
    assert "pip install -e ." in str(info.value)
