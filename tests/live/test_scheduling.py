"""Work only for frames that will be animated: with an engine slower than the camera, the
framing stage (face detection, crop) runs about once per animated frame, not once per camera
frame, and the frames it frames are fresh."""

from __future__ import annotations

import time

import numpy as np

from live.grabber import LatestFrameGrabber
from live.loop import FrameRecord, LiveLoop
from live.pipeline import Crop
from tests.live.fakes import IndexedSource
from tests.live.test_policy import FakeAnimator, _avatars


class SlowAnimator(FakeAnimator):
    def animate(self, crop, out=None, pts=None):
        time.sleep(0.08)  # 12 frames/s behind a 50 fps camera
        return super().animate(crop, out, pts)


class CountingCropper:
    def __init__(self) -> None:
        self.calls = 0
        self.last_face = None

    def __call__(self, frame: np.ndarray, timestamp: float, out: np.ndarray) -> Crop:
        self.calls += 1
        out[...] = 0
        return Crop(out, None, "resize")


def test_framing_runs_once_per_animated_frame_with_a_slow_engine() -> None:
    cropper = CountingCropper()
    ages: list[float] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        ages.append(record.latency_ms)

    grabber = LatestFrameGrabber(IndexedSource(100, fps=50.0), mode="paced")
    loop = LiveLoop(grabber, cropper, SlowAnimator(), _avatars(), on_frame=on_frame)  # type: ignore[arg-type]
    loop.run()
    animated = loop.frames_out
    assert animated >= 10
    assert cropper.calls <= animated + 2, (cropper.calls, animated)  # not one per camera frame
    # Framed just before the engine is free: a frame waits little before it is animated.
    assert float(np.median(ages)) < 80 + 60, ages
