"""Tests for live.capture: sources, errors and the latest-frame grabber."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from live import capture
from live.capture import (
    CameraInfo,
    CameraSource,
    Frame,
    FrameSource,
    LatestFrameGrabber,
    RetryPolicy,
    open_source,
)
from live.errors import CameraError, InputError, SettingError
from tests.conftest import shared_path


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


# --- file sources -------------------------------------------------------------------------


def test_folder_is_sorted_by_name_and_filters_extensions(tmp_path: Path) -> None:
    for number in (10, 2, 1):
        write_png(tmp_path / f"frame_{number}.png", solid((number, 0, 0)))
    write_png(tmp_path / "frame_3.PNG", solid((3, 0, 0)))
    Image.fromarray(solid((4, 0, 0))).save(tmp_path / "frame_4.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as source:
        assert source.frame_count == 5
        assert source.size == (32, 24)
        assert not source.is_live
        frames = list(source)
    assert [int(frame.image[0, 0, 0]) for frame in frames] == [1, 2, 3, 4, 10]
    assert [frame.index for frame in frames] == [0, 1, 2, 3, 4]
    assert all(frame.image.shape == (24, 32, 3) for frame in frames)
    assert all(frame.image.dtype == np.uint8 for frame in frames)
    stamps = [frame.timestamp for frame in frames]
    assert stamps == sorted(stamps)


def test_folder_converts_gray_and_alpha_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(tmp_path / "a.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "b.png")
    frames = list(open_source(str(tmp_path)))
    assert frames[0].image.shape == (8, 8, 3)
    assert frames[0].image[0, 0].tolist() == [77, 77, 77]
    assert frames[1].image[0, 0].tolist() == [0, 200, 0]


def test_red_image_reads_back_as_rgb_red(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", solid((255, 0, 0)))
    (frame,) = list(open_source(tmp_path / "red.png"))
    assert frame.image[5, 5].tolist() == [255, 0, 0]


def test_gif_frames_order_and_fps(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.fromarray(solid(colour)) for colour in colours]
    path = tmp_path / "clip.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    with open_source(path) as source:
        assert source.frame_count == 3
        assert source.fps == pytest.approx(10.0)
        assert source.size == (32, 24)
        frames = list(source)
    assert [frame.image[0, 0].tolist() for frame in frames] == [list(c) for c in colours]


def test_mona_talking_gif_has_50_rgb_frames() -> None:
    path = shared_path("media", "driving", "mona-talking.gif")
    with open_source(str(path)) as source:
        assert source.size == (600, 404)
        assert source.frame_count == 50
        frames = list(source)
    assert len(frames) == 50
    assert all(frame.image.shape == (404, 600, 3) for frame in frames)
    assert all(frame.image.dtype == np.uint8 for frame in frames)
    assert not np.array_equal(frames[0].image, frames[25].image)


def write_video(path: Path, images: list[np.ndarray], fps: float, fourcc: str = "mp4v") -> None:
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for image in images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_file_frames_fps_and_rgb(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    images = [solid((255, 0, 0), 64, 48)] + [solid((v, v, v), 64, 48) for v in (40, 120, 200)]
    write_video(path, images, fps=10)
    with open_source(path) as source:
        assert source.size == (64, 48)
        assert source.fps == pytest.approx(10.0)
        assert source.frame_count == 4
        frames = list(source)
    assert len(frames) == 4
    red = frames[0].image[24, 32].astype(int)
    assert red[0] > 200 and red[1] < 50 and red[2] < 50
    means = [float(frame.image.mean()) for frame in frames[1:]]
    assert means == sorted(means)
    assert means[0] == pytest.approx(40, abs=8) and means[2] == pytest.approx(200, abs=8)


# --- input errors -------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="does not exist") as info:
        open_source(missing)
    assert str(missing) in str(info.value)


def test_empty_folder_lists_accepted_extensions(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="contains no images") as info:
        open_source(tmp_path)
    for extension in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        assert extension in str(info.value)


def test_undecodable_video_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_text("this is not a video")
    with pytest.raises(InputError, match="Cannot decode") as info:
        open_source(path)
    assert str(path) in str(info.value)


def test_video_with_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()
    with pytest.raises(InputError, match="zero frames"):
        open_source(path)


def test_undecodable_gif(tmp_path: Path) -> None:
    path = tmp_path / "broken.gif"
    path.write_bytes(b"GIF89a not really")
    with pytest.raises(InputError, match="Cannot decode the GIF"):
        open_source(path)


def test_unreadable_image_in_folder_is_named(tmp_path: Path) -> None:
    write_png(tmp_path / "0.png", solid((1, 2, 3)))
    (tmp_path / "1.png").write_bytes(b"\x89PNG truncated")
    with open_source(tmp_path) as source:
        assert source.read() is not None
        with pytest.raises(InputError, match=r"1\.png"):
            source.read()


def test_unreadable_first_image_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "0.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"0\.jpg"):
        open_source(tmp_path)


# --- cameras ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [97, "97"])
def test_missing_camera_index_fails_quickly(spec: int | str) -> None:
    start = time.perf_counter()
    with pytest.raises(CameraError) as info:
        open_source(spec)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "index 97" in message
    assert "--list-cameras" in message
    assert "other application" in message


def test_missing_camera_device() -> None:
    with pytest.raises(CameraError, match="/dev/video97"):
        open_source("/dev/video97")


def test_negative_camera_index() -> None:
    with pytest.raises(InputError, match="negative"):
        open_source(-1)


class FakeCapture:
    """Stand-in for cv2.VideoCapture: delivers 640x480 at 30 fps whatever is requested."""

    def __init__(self, opened: bool = True, frames: int = 1000) -> None:
        self.opened = opened
        self.frames = frames
        self.requested: dict[int, float] = {}
        self.released = False

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

    def release(self) -> None:
        self.released = True


def test_camera_reports_delivered_size_and_fps(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCapture()
    monkeypatch.setattr(capture, "_open_capture", lambda camera, api: fake)
    with open_source(0, width=1280, height=720, fps=60) as source:
        assert fake.requested[cv2.CAP_PROP_FRAME_WIDTH] == 1280
        assert source.is_live
        assert source.size == (640, 480)
        assert source.fps == 30.0
        first, second = source.read(), source.read()
    assert first is not None and second is not None
    assert first.image[0, 0].tolist() == [255, 0, 0]
    assert (first.index, second.index) == (0, 1)
    assert fake.released


def test_camera_that_opens_but_delivers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCapture(frames=0)
    monkeypatch.setattr(capture, "_open_capture", lambda camera, api: fake)
    with pytest.raises(CameraError, match="delivered no frame"):
        CameraSource(2)
    assert fake.released


def test_list_cameras_probes_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(capture.platform, "system", lambda: "Linux")
    monkeypatch.setattr(
        capture, "_linux_camera_devices", lambda: [(0, str(tmp_path)), (1, str(tmp_path))]
    )
    captures = iter([FakeCapture(), FakeCapture(opened=False)])
    monkeypatch.setattr(capture, "_open_capture", lambda camera, api: next(captures))
    cameras = capture.list_cameras()
    assert len(cameras) == 1
    assert (cameras[0].index, cameras[0].width, cameras[0].height) == (0, 640, 480)
    assert cameras[0].fps == 30.0


def test_list_cameras_elsewhere_probes_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.platform, "system", lambda: "Windows")
    probed: list[int | str] = []

    def fake_open(camera: int | str, api: int) -> FakeCapture:
        probed.append(camera)
        return FakeCapture(opened=camera == 1)

    monkeypatch.setattr(capture, "_open_capture", fake_open)
    cameras = capture.list_cameras(max_index=3)
    assert probed == [0, 1, 2]
    assert [(camera.index, camera.device, camera.name) for camera in cameras] == [(1, None, None)]


def test_linux_devices_are_sorted_by_number(tmp_path: Path) -> None:
    for name in ("video10", "video2", "video0", "videoX", "video", "vhci"):
        (tmp_path / name).touch()
    devices = capture._linux_camera_devices(tmp_path)
    assert devices == [(n, str(tmp_path / f"video{n}")) for n in (0, 2, 10)]


def test_camera_info_describe() -> None:
    info = CameraInfo(
        index=2, device="/dev/video2", name="HD Webcam", width=1280, height=720, fps=30.0
    )
    assert info.describe() == "2 (/dev/video2): 1280x720 @ 30 fps  HD Webcam"
    bare = CameraInfo(index=0, device=None, name=None, width=640, height=480, fps=None)
    assert bare.describe() == "0: 640x480"


# --- grabber ------------------------------------------------------------------------------


def test_grabber_latest_drops_stale_frames_and_never_goes_back() -> None:
    source = CountingSource(80, delay=0.002)
    indices: list[int] = []
    with LatestFrameGrabber(source, mode="latest") as grabber:
        while (frame := grabber.get(timeout=2.0)) is not None:
            indices.append(frame.index)
            time.sleep(0.012)
        assert grabber.finished
        assert grabber.status == "end of input"
        assert grabber.dropped > 0
        assert grabber.delivered == len(indices)
        assert grabber.delivered + grabber.dropped == 80
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert indices[-1] == 79
    assert source.released


def test_grabber_latest_hands_over_newest_frame() -> None:
    source = CountingSource(30)
    grabber = LatestFrameGrabber(source, mode="latest").start()
    deadline = time.monotonic() + 5
    while grabber.status != "end of input" and time.monotonic() < deadline:
        time.sleep(0.01)
    frame = grabber.get(timeout=1.0)
    assert frame is not None and frame.index == 29
    assert grabber.get(timeout=0.1) is None
    assert grabber.dropped == 29
    grabber.stop()


def test_grabber_every_mode_returns_all_frames_in_order() -> None:
    source = CountingSource(40)
    with LatestFrameGrabber(source, mode="every") as grabber:
        frames: list[Frame] = []
        while (frame := grabber.get(timeout=2.0)) is not None:
            frames.append(frame)
            if frame.index % 7 == 0:
                time.sleep(0.01)
        assert grabber.dropped == 0
    assert [frame.index for frame in frames] == list(range(40))
    assert [int(frame.image[0, 0, 0]) for frame in frames] == list(range(40))


def test_grabber_every_mode_on_a_gif(tmp_path: Path) -> None:
    images = [Image.fromarray(solid((value, 0, 0))) for value in range(0, 250, 25)]
    path = tmp_path / "ramp.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=40)
    with LatestFrameGrabber(open_source(path), mode="every") as grabber:
        values = []
        while (frame := grabber.get(timeout=2.0)) is not None:
            values.append(int(frame.image[0, 0, 0]))
    assert values == list(range(0, 250, 25))


def test_grabber_paced_mode_follows_source_fps() -> None:
    source = CountingSource(6, fps=20.0)
    start = time.perf_counter()
    with LatestFrameGrabber(source, mode="paced") as grabber:
        frames = []
        while (frame := grabber.get(timeout=2.0)) is not None:
            frames.append(frame)
    elapsed = time.perf_counter() - start
    assert [frame.index for frame in frames] == list(range(6))
    assert elapsed >= 5 / 20 * 0.9
    assert grabber.measured_fps == pytest.approx(20.0, rel=0.3)
    gaps = np.diff([frame.timestamp for frame in frames])
    assert float(np.median(gaps)) == pytest.approx(0.05, abs=0.02)


def test_grabber_reraises_source_errors(tmp_path: Path) -> None:
    write_png(tmp_path / "0.png", solid((1, 2, 3)))
    (tmp_path / "1.png").write_bytes(b"garbage")
    with LatestFrameGrabber(open_source(tmp_path), mode="every") as grabber:
        assert grabber.get(timeout=2.0) is not None
        with pytest.raises(InputError, match=r"1\.png"):
            grabber.get(timeout=2.0)
        assert grabber.status.startswith("error: Cannot decode the image")


@pytest.mark.parametrize("raise_on_fail", [False, True])
def test_grabber_retries_a_lost_camera(raise_on_fail: bool) -> None:
    source = FlakyCamera(fail_after=4, failed_reopens=2, raise_on_fail=raise_on_fail)
    statuses: list[str] = []
    retry = RetryPolicy(initial_delay=0.02, factor=2.0, max_delay=0.05)
    grabber = LatestFrameGrabber(source, retry=retry, on_status=statuses.append).start()
    seen_lost = False
    indices = []
    deadline = time.monotonic() + 5
    while len(indices) < 12 and time.monotonic() < deadline:
        seen_lost = seen_lost or grabber.status.startswith("camera lost")
        frame = grabber.get(timeout=0.01)
        if frame is not None:
            indices.append(frame.index)
    grabber.stop()
    assert len(indices) == 12
    assert seen_lost
    assert source.reopen_calls == 3
    assert statuses[:5] == [
        "ok",
        "camera lost, retrying (attempt 1)",
        "camera lost, retrying (attempt 2)",
        "camera lost, retrying (attempt 3)",
        "ok",
    ]
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert grabber.error is None
    assert grabber.status == "stopped"
    assert source.closed


def test_grabber_stop_releases_a_live_source_that_never_ends() -> None:
    source = FlakyCamera(fail_after=10**9, failed_reopens=0, raise_on_fail=False)
    grabber = LatestFrameGrabber(source).start()
    assert grabber.get(timeout=2.0) is not None
    grabber.stop()
    assert source.closed and source.release_calls == 1
    assert grabber.finished
    assert not any(thread.name == "capture flaky" for thread in threading.enumerate())


def test_grabber_releases_the_source_on_ctrl_c() -> None:
    source = FlakyCamera(fail_after=10**9, failed_reopens=0, raise_on_fail=False)
    with pytest.raises(KeyboardInterrupt), LatestFrameGrabber(source) as grabber:
        assert grabber.get(timeout=2.0) is not None
        raise KeyboardInterrupt
    assert source.closed


def test_grabber_stop_before_start_closes_the_source() -> None:
    source = CountingSource(3)
    grabber = LatestFrameGrabber(source)
    grabber.stop()
    assert source.released
    with pytest.raises(RuntimeError, match="before start"):
        grabber.get(timeout=0.1)


def test_grabber_rejects_bad_settings() -> None:
    with pytest.raises(SettingError, match="grab mode"):
        LatestFrameGrabber(CountingSource(1), mode="newest")  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="fps"):
        LatestFrameGrabber(CountingSource(1), mode="paced", fps=0)


def test_retry_policy_backoff() -> None:
    policy = RetryPolicy(initial_delay=0.5, factor=2.0, max_delay=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(SettingError):
        RetryPolicy(factor=0.5)
