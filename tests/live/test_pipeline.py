"""Tests for live.pipeline: croppers write the crop into the buffer their caller owns."""

from __future__ import annotations

import numpy as np
import pytest

from live.face import FaceBox
from live.framing import FramingConfig
from live.pipeline import DETECT_WIDTH, FaceCropper, ResizeCropper


class ScriptedDetector:
    """Stands in for live.face.FaceDetector: returns the given faces in turn."""

    def __init__(self, faces: list[FaceBox | None]) -> None:
        self._faces = list(faces)

    def detect(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceBox | None:
        return self._faces.pop(0)


def _camera(value: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_resize_cropper_writes_into_the_callers_buffer() -> None:
    cropper = ResizeCropper(16)
    out = np.zeros((16, 16, 3), np.uint8)
    crop = cropper(_camera(90), 0.0, out)
    assert crop.image is out and int(out[8, 8, 0]) == 90
    assert crop.status == "resize" and crop.box is not None and crop.box.size == 64
    # A frame already at the model size is copied, not aliased: the caller owns the crop.
    square = _camera(40, 16, 16)
    crop = cropper(square, 0.1, out)
    assert crop.image is out and not np.shares_memory(out, square)
    assert int(out[0, 0, 0]) == 40


def test_face_cropper_writes_into_the_callers_buffer_and_skips_it_without_a_face() -> None:
    face = FaceBox(x=24.0, y=14.0, width=16.0, height=20.0, score=0.9)
    cropper = FaceCropper(16, ScriptedDetector([None, face]), FramingConfig())  # type: ignore[arg-type]
    out = np.full((16, 16, 3), 3, np.uint8)
    crop = cropper(_camera(200), 0.0, out)
    assert (crop.image, crop.box, crop.status) == (None, None, "lost")
    assert int(out.max()) == 3  # untouched: the caller may reuse it at once
    crop = cropper(_camera(200), 0.04, out)
    assert crop.image is out and crop.status == "tracking"
    assert cropper.last_face == face
    assert int(out[8, 8, 0]) == 200


class RecordingDetector:
    """Finds a face at a fixed place in whatever image it gets; records the image sizes."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def detect(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceBox | None:
        height, width = image_rgb.shape[:2]
        self.sizes.append((width, height))
        return FaceBox(width * 0.4, height * 0.3, width * 0.2, height * 0.25, 0.9)


def test_faces_are_detected_on_a_downscaled_copy_and_mapped_back() -> None:
    detector = RecordingDetector()
    cropper = FaceCropper(16, detector, FramingConfig())  # type: ignore[arg-type]
    frame = np.zeros((720, 1280, 3), np.uint8)
    cropper(frame, 0.0, np.empty((16, 16, 3), np.uint8))
    assert detector.sizes == [(DETECT_WIDTH, 360)]  # not the 1280x720 frame
    face = cropper.last_face
    assert face is not None
    assert (face.x, face.y, face.width, face.height) == pytest.approx((512, 216, 256, 180))
    small = np.zeros((240, 320, 3), np.uint8)  # small frames are used as they are
    cropper(small, 0.04, np.empty((16, 16, 3), np.uint8))
    assert detector.sizes[-1] == (320, 240)


def test_downscaled_detection_finds_the_same_face() -> None:
    """The real detector on a 1280x720 frame: the face found on the 640-wide copy matches the
    face found at full size."""
    import cv2

    from live.face import FaceDetector
    from tests.conftest import shared_path

    photo = cv2.imread(str(shared_path("media", "avatars", "obama.jpg")))
    photo = cv2.cvtColor(cv2.resize(photo, (540, 720)), cv2.COLOR_BGR2RGB)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 370:910] = photo
    with FaceDetector("image") as detector:
        full = detector.detect(frame)
        cropper = FaceCropper(64, detector, FramingConfig())
        cropper(frame, 0.0, np.empty((64, 64, 3), np.uint8))
    found = cropper.last_face
    assert full is not None and found is not None
    for a, b in ((found.x, full.x), (found.y, full.y), (found.width, full.width)):
        assert abs(a - b) < 0.05 * full.width, (found, full)


class CountingDetector:
    """Finds one face at a fixed place, or none while ``present`` is False; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.present = True

    def detect(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceBox | None:
        self.calls += 1
        return FaceBox(24.0, 14.0, 16.0, 20.0, 0.9) if self.present else None


def test_detection_runs_a_few_times_a_second_and_again_at_once_when_needed() -> None:
    detector = CountingDetector()
    cropper = FaceCropper(16, detector, FramingConfig(detect_hz=5.0))  # type: ignore[arg-type]
    out = np.empty((16, 16, 3), np.uint8)
    for k in range(50):  # 2 s at 25 fps: detections at 0, 0.2, ... 1.8 s
        crop = cropper(_camera(100), k / 25, out)
        assert crop.status == "tracking" and crop.image is out
    assert detector.calls == cropper.detections == 10
    cropper.redetect()  # recalibrate: the next frame is detected, whatever the clock
    cropper(_camera(100), 2.0, out)
    assert detector.calls == 11
    cropper.reset()  # mirror toggled
    cropper(_camera(100), 2.04, out)
    assert detector.calls == 12
    cropper(_camera(100, 60, 80), 2.08, out)  # another frame size: another camera
    assert detector.calls == 13
    cropper(_camera(100, 60, 80), 1.0, out)  # the clock went back (a file looped)
    assert detector.calls == 14
    detector.present = False  # the face is lost at the next detection ...
    cropper(_camera(100, 60, 80), 1.2, out)
    assert cropper(_camera(100, 60, 80), 1.24, out).status == "holding"
    assert detector.calls == 16  # ... and searched for on every frame until found
    detector.present = True
    cropper(_camera(100, 60, 80), 1.28, out)
    cropper(_camera(100, 60, 80), 1.32, out)
    assert detector.calls == 17
    every = FaceCropper(16, CountingDetector(), FramingConfig(detect_hz=0.0))  # type: ignore[arg-type]
    for k in range(5):
        every(_camera(100), k / 25, out)
    assert every.detections == 5


def test_tracked_crop_follows_a_moving_talking_head_with_few_detections() -> None:
    """The talking-head clip panned across a 1280x720 frame at 25 fps for 6 s: detecting
    5 times a second, the crop holds the face that a detection on every frame finds, on
    every frame, and stays about as centred on it."""
    from PIL import Image

    from live.face import FaceDetector
    from tests.conftest import shared_path

    with Image.open(shared_path("media", "driving", "mona-talking.gif")) as gif:
        images = []
        for i in range(gif.n_frames):
            gif.seek(i)
            images.append(np.asarray(gif.convert("RGB")))
    count, height, width = 150, *images[0].shape[:2]
    out = np.empty((64, 64, 3), np.uint8)
    frame = np.zeros((720, 1280, 3), np.uint8)
    with FaceDetector("image") as detector:
        cropper = FaceCropper(64, detector, FramingConfig(detect_hz=5.0))
        worst = 0.0
        for k in range(count):
            frame[...] = 0
            x = round((1280 - width) * k / (count - 1))  # about 110 pixels a second
            frame[150 : 150 + height, x : x + width] = images[k % len(images)]
            face = detector.detect(frame)
            crop = cropper(frame, k / 25, out)
            assert face is not None and crop.box is not None, k
            assert crop.box.contains(face), (k, crop.box, face)
            worst = max(worst, abs(crop.box.center[0] - face.center[0]) / face.width)
    assert cropper.detections <= count / 25 * 5 + 2, cropper.detections
    assert worst < 0.3, worst


def test_recalibrating_detects_the_face_on_the_next_frame() -> None:
    """The recalibrate action (on the animation thread) makes the framing stage detect at
    once: the new reference pose gets a fresh box, not one up to 1/detect_hz old."""
    from types import SimpleNamespace

    from live.actions import apply_action
    from live.controls import Action

    detector = CountingDetector()
    cropper = FaceCropper(16, detector, FramingConfig(detect_hz=5.0))  # type: ignore[arg-type]
    out = np.empty((16, 16, 3), np.uint8)
    cropper(_camera(100), 0.0, out)
    cropper(_camera(100), 0.04, out)
    assert detector.calls == 1
    restarts = []
    policy = SimpleNamespace(restart_calibration=lambda: restarts.append(1))
    apply_action(SimpleNamespace(policy=policy, cropper=cropper), Action.RECALIBRATE)  # type: ignore[arg-type]
    cropper(_camera(100), 0.08, out)
    assert restarts == [1] and detector.calls == 2
