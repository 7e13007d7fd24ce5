"""The per-frame cost outside the engine is measured with the real output paths."""

from __future__ import annotations

import av
import numpy as np

from benchmarks.outside_engine import measure
from benchmarks.pipeline import NullDeviceCamera, OffscreenPreview
from live.framing import CropBox
from live.preview import compose_preview
from tests.conftest import shared_path


def test_null_device_camera_converts_like_the_v4l2loopback_backend() -> None:
    """RGB -> I420 as libyuv's RAWToI420 (BT.601, limited range): luma as FFmpeg's rgb24 ->
    yuv420p gives it, chroma from the average of each 2 x 2 block as libyuv computes it."""
    rng = np.random.default_rng(0)
    frame = np.repeat(np.repeat(rng.integers(0, 255, (18, 32, 3), np.uint8), 4, 0), 4, 1)
    camera = NullDeviceCamera(128, 72, 30.0, None)
    camera.send(frame)
    camera.close()
    expected = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
    planes = expected.to_ndarray()  # (72 * 3 / 2) x 128: Y, then U, then V
    assert camera.frames == 1 and camera.i420.shape == planes.shape
    difference = np.abs(camera.i420.astype(int) - planes)
    assert difference[:72].max() <= 2  # luma
    r, g, b = frame.reshape(36, 2, 64, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    chroma = camera.i420[72:].astype(float).reshape(2, 36, 64)  # U plane, then V
    assert np.abs(chroma[0] - u).max() <= 2 and np.abs(chroma[1] - v).max() <= 2


def test_offscreen_preview_draws_what_the_window_shows() -> None:
    camera = np.full((72, 128, 3), 90, np.uint8)
    avatar = np.full((64, 64, 3), 200, np.uint8)
    box = CropBox(40.0, 10.0, 40.0)
    shown = OffscreenPreview(height=72).show(camera, avatar, box, {"fps": 25.0}, "tracking")
    rgb = compose_preview(camera, avatar, box, {"fps": 25.0}, "tracking", height=72)
    assert np.array_equal(shown, rgb[..., ::-1])  # the BGR picture imshow is given


def test_outside_engine_benchmark_reports_each_stage() -> None:
    result = measure(shared_path("media", "driving", "mona-talking.gif"), frames=20, resolution=64)
    stages = {"framing", "watermark", "preview (offscreen)", "total"}
    for variant in ("tracked", "detect every frame"):
        times = result["stages_ms"][variant]
        assert stages <= set(times) and any(name.startswith("virtual camera") for name in times)
        for stats in times.values():
            assert 0 <= stats["p50"] <= stats["p90"]
    # 30 frames (10 warm-up) at 25 fps: detections 5 times a second vs every frame.
    assert result["detections"]["detect every frame"] == 30
    assert result["detections"]["tracked"] <= 8
