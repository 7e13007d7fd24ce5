"""Tests for live.grabber: the capture thread's modes, errors and camera reconnection."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live.errors import InputError, SettingError
from live.grabber import LatestFrameGrabber, RetryPolicy
from live.sources import Frame, open_source
from tests.live.fakes import CountingSource, FlakyCamera, solid, write_png

# --- grabber ------------------------------------------------------------------------------


def test_grabber_latest_drops_stale_frames_and_never_goes_back() -> None:
    source = CountingSource(80, delay=0.002)
    indices: list[int] = []
    with LatestFrameGrabber(source, mode="live") as grabber:
        while (frame := grabber.get(timeout=2.0)) is not None:
            indices.append(frame.index)
            time.sleep(0.012)
        assert grabber.finished
        assert grabber.status == "end of input"
        assert grabber.dropped > 0
        assert grabber.delivered == len(indices)
        assert grabber.delivered + grabber.dropped == 80
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert indices[-1] >= 70  # frames grabbed while the consumer was busy are skipped
    assert source.released


def test_grabber_decodes_only_the_frames_the_consumer_waits_for(monkeypatch) -> None:
    """A 640x480 camera read by a consumer that takes a frame every 20 ms: frames grabbed
    while it is busy are never decoded (retrieved), and each frame it gets is fresh."""
    from live import sources
    from tests.live.fakes import FakeCapture

    class Camera(FakeCapture):
        def grab(self) -> bool:
            time.sleep(0.004)  # a 250 fps camera
            return super().grab()

    capture = Camera(frames=60)
    monkeypatch.setattr(sources, "_open_capture", lambda camera, api: capture)
    source = sources.CameraSource(0)
    ages = []
    with LatestFrameGrabber(source, mode="live") as grabber:
        while capture.frames > 5:
            frame = grabber.get(timeout=2.0)
            assert frame is not None
            ages.append(time.perf_counter() - frame.timestamp)
            time.sleep(0.02)
        deadline = time.monotonic() + 5
        while capture.frames > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert capture.grabbed == 59  # the first frame is read while opening
    assert capture.retrieved <= len(ages) + 1 < capture.grabbed / 3
    assert grabber.skipped >= capture.grabbed - capture.retrieved - 1
    assert max(ages[1:]) < 0.05


def test_grabber_every_mode_returns_all_frames_in_order() -> None:
    source = CountingSource(40)
    with LatestFrameGrabber(source, mode="offline") as grabber:
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
    with LatestFrameGrabber(open_source(path), mode="offline") as grabber:
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
    with LatestFrameGrabber(open_source(tmp_path), mode="offline") as grabber:
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
    # The error's text is kept: the read's (when it raised), then the failed reopen's.
    lost = ": device unplugged" if raise_on_fail else ""
    assert statuses[:5] == [
        "ok",
        f"camera lost, retrying (attempt 1){lost}",
        "camera lost, retrying (attempt 2): still unplugged",
        "camera lost, retrying (attempt 3): still unplugged",
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
    with pytest.raises(SettingError, match="timing mode"):
        LatestFrameGrabber(CountingSource(1), mode="newest")  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="fps"):
        LatestFrameGrabber(CountingSource(1), mode="paced", fps=0)


def test_retry_policy_backoff() -> None:
    policy = RetryPolicy(initial_delay=0.5, factor=2.0, max_delay=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(SettingError):
        RetryPolicy(factor=0.5)
