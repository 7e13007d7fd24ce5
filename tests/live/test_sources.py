"""Tests for live.sources: file and camera sources and their errors."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from live import sources
from live.errors import CameraError, InputError
from live.sources import CameraSource, open_source
from tests.conftest import shared_path
from tests.live.fakes import FakeCapture, solid, write_png

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


def test_camera_reports_delivered_size_and_fps(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCapture()
    monkeypatch.setattr(sources, "_open_capture", lambda camera, api: fake)
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
    monkeypatch.setattr(sources, "_open_capture", lambda camera, api: fake)
    with pytest.raises(CameraError, match="delivered no frame"):
        CameraSource(2)
    assert fake.released


def test_camera_frames_are_stamped_at_capture_not_after_decoding(monkeypatch) -> None:
    """The capture time (the start of "capture to send" latency) is taken once the camera
    delivered the frame (grab), before the 50 ms of decoding (retrieve); live frames are
    presented on that clock from the first frame."""
    capture = FakeCapture(decode_delay=0.05)
    monkeypatch.setattr(sources, "_open_capture", lambda camera, api: capture)
    with sources.CameraSource(0) as camera:
        camera.read()  # the frame read while opening
        frames = []
        for _ in range(2):
            frame = camera.read()
            frames.append((frame, time.perf_counter()))
    for frame, returned in frames:
        assert returned - frame.timestamp >= 0.045  # the decoding is part of the latency
    first, second = frames[0][0], frames[1][0]
    assert second.pts - first.pts == pytest.approx(second.timestamp - first.timestamp)
    assert capture.grabbed == capture.retrieved == 2


def test_file_frames_are_presented_on_the_file_clock(tmp_path) -> None:
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    with open_source(tmp_path, fps=10.0) as source:
        assert [frame.pts for frame in source] == pytest.approx([0.0, 0.1, 0.2])
