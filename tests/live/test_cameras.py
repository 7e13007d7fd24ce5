"""Tests for live.cameras: listing the cameras of a machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from live import cameras as cameras_module
from live import sources
from live.cameras import CameraInfo
from tests.live.fakes import FakeCapture


def test_list_cameras_probes_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cameras_module.platform, "system", lambda: "Linux")
    monkeypatch.setattr(
        cameras_module, "_linux_camera_devices", lambda: [(0, str(tmp_path)), (1, str(tmp_path))]
    )
    captures = iter([FakeCapture(), FakeCapture(opened=False)])
    monkeypatch.setattr(sources, "_open_capture", lambda camera, api: next(captures))
    cameras = cameras_module.list_cameras()
    assert len(cameras) == 1
    assert (cameras[0].index, cameras[0].width, cameras[0].height) == (0, 640, 480)
    assert cameras[0].fps == 30.0


def test_list_cameras_elsewhere_probes_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cameras_module.platform, "system", lambda: "Windows")
    probed: list[int | str] = []

    def fake_open(camera: int | str, api: int) -> FakeCapture:
        probed.append(camera)
        return FakeCapture(opened=camera == 1)

    monkeypatch.setattr(sources, "_open_capture", fake_open)
    cameras = cameras_module.list_cameras(max_index=3)
    assert probed == [0, 1, 2]
    assert [(camera.index, camera.device, camera.name) for camera in cameras] == [(1, None, None)]


def test_linux_devices_are_sorted_by_number(tmp_path: Path) -> None:
    for name in ("video10", "video2", "video0", "videoX", "video", "vhci"):
        (tmp_path / name).touch()
    devices = cameras_module._linux_camera_devices(tmp_path)
    assert devices == [(n, str(tmp_path / f"video{n}")) for n in (0, 2, 10)]


def test_camera_info_describe() -> None:
    info = CameraInfo(
        index=2, device="/dev/video2", name="HD Webcam", width=1280, height=720, fps=30.0
    )
    assert info.describe() == "2 (/dev/video2): 1280x720 @ 30 fps  HD Webcam"
    bare = CameraInfo(index=0, device=None, name=None, width=640, height=480, fps=None)
    assert bare.describe() == "0: 640x480"
