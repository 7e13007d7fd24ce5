"""Tests for live.face: the vendored model and the MediaPipe Tasks face detector."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live.errors import FaceModelError, SettingError
from live.face import MODEL_PATH, MODEL_SHA256, FaceBox, FaceDetector
from live.sources import open_source
from tests.conftest import shared_path

AVATARS = ("mona.jpg", "einstein.jpg", "obama.jpg")


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_plausible(face: FaceBox, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    # MediaPipe boxes may pass the image edge a little where the face is cut off (a chin).
    slack = 0.05 * face.side
    assert face.x >= -slack and face.y >= -slack
    assert face.right <= width + slack and face.bottom <= height + slack
    assert 0.08 * min(width, height) < face.side < 0.9 * min(width, height)
    assert 0.6 < face.width / face.height < 1.6
    assert 0.5 <= face.score <= 1.0


@pytest.fixture(scope="module")
def image_detector() -> Iterator[FaceDetector]:
    with FaceDetector(mode="image") as detector:
        yield detector


def test_vendored_model_is_unchanged() -> None:
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert digest == MODEL_SHA256
    notice = (MODEL_PATH.parent / "NOTICE").read_text()
    assert MODEL_SHA256 in notice and "mediapipe==0.10.21" in notice
    assert "Apache License" in (MODEL_PATH.parent / "LICENSE").read_text()


@pytest.mark.parametrize("name", AVATARS)
def test_detects_the_face_in_each_avatar(image_detector: FaceDetector, name: str) -> None:
    image = load_rgb(shared_path("media", "avatars", name))
    face = image_detector.detect(image)
    assert face is not None
    assert_plausible(face, image)


def test_detects_the_face_in_the_driving_clip() -> None:
    path = shared_path("media", "driving", "mona-talking.gif")
    with FaceDetector(mode="video") as detector, open_source(path) as source:
        count = 0
        for frame in source:
            face = detector.detect(frame.image, frame.index * 40)
            assert face is not None, f"no face in frame {frame.index}"
            assert_plausible(face, frame.image)
            count += 1
    assert count == 50


def test_blank_image_has_no_face(image_detector: FaceDetector) -> None:
    assert image_detector.detect(np.zeros((240, 320, 3), np.uint8)) is None
    assert image_detector.detect(np.full((240, 320, 3), 255, np.uint8)) is None


def test_video_mode_accepts_repeated_and_decreasing_timestamps() -> None:
    image = load_rgb(shared_path("media", "avatars", "obama.jpg"))
    with FaceDetector(mode="video") as detector:
        stamps = [100, 100, 100, 50, 0, 101, 500]
        faces = [detector.detect(image, stamp) for stamp in stamps]
        faces.append(detector.detect(image))  # timestamp from the clock
    assert all(face is not None for face in faces)


def test_largest_preference_and_all_faces() -> None:
    small = load_rgb(shared_path("media", "avatars", "einstein.jpg"))
    big = load_rgb(shared_path("media", "avatars", "obama.jpg"))
    scale = 0.4
    small = np.asarray(
        Image.fromarray(small).resize((int(small.shape[1] * scale), int(small.shape[0] * scale)))
    )
    canvas = np.zeros(
        (max(big.shape[0], small.shape[0]), big.shape[1] + small.shape[1], 3), np.uint8
    )
    canvas[: big.shape[0], : big.shape[1]] = big
    canvas[: small.shape[0], big.shape[1] :] = small
    with FaceDetector(mode="image", prefer="largest") as detector:
        faces = detector.detect_all(canvas)
        largest = detector.detect(canvas)
    assert len(faces) == 2
    assert [face.score for face in faces] == sorted((face.score for face in faces), reverse=True)
    assert largest is not None and largest.center[0] < big.shape[1]
    assert largest.area == max(face.area for face in faces)


def test_min_confidence_filters_detections() -> None:
    image = load_rgb(shared_path("media", "avatars", "mona.jpg"))
    with FaceDetector(mode="image", min_confidence=0.0) as loose:
        face = loose.detect(image)
    assert face is not None
    with FaceDetector(mode="image", min_confidence=min(face.score + 0.05, 1.0)) as strict:
        assert strict.detect(image) is None


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.tflite"
    with pytest.raises(FaceModelError, match="is missing") as info:
        FaceDetector(model_path=missing)
    assert str(missing) in str(info.value)


def test_corrupt_model_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(MODEL_PATH.read_bytes()[:50_000])
    with pytest.raises(FaceModelError, match="corrupt") as info:
        FaceDetector(model_path=corrupt)
    assert MODEL_SHA256 in str(info.value)


def test_settings_are_validated() -> None:
    with pytest.raises(SettingError, match="from 0 to 1"):
        FaceDetector(min_confidence=1.5)
    with pytest.raises(SettingError, match="'video' or 'image'"):
        FaceDetector(mode="stream")  # type: ignore[arg-type]


def test_detect_rejects_non_rgb_input(image_detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        image_detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        image_detector.detect(np.zeros((10, 10, 3), np.float32))


def test_detect_accepts_non_contiguous_views(image_detector: FaceDetector) -> None:
    image = load_rgb(shared_path("media", "avatars", "obama.jpg"))
    mirrored = image[:, ::-1]
    face = image_detector.detect(mirrored)
    direct = image_detector.detect(image)
    assert face is not None and direct is not None
    expected = direct.mirrored(image.shape[1])
    assert abs(face.center[0] - expected.center[0]) < 0.05 * direct.width


def test_face_box_helpers() -> None:
    face = FaceBox(x=10, y=20, width=30, height=40, score=0.9)
    assert face.center == (25, 40)
    assert (face.right, face.bottom, face.side, face.area) == (40, 60, 40, 1200)
    assert face.mirrored(100) == FaceBox(60, 20, 30, 40, 0.9)
    assert FaceBox(-5, 90, 20, 20, 0.5).clipped(100, 100) == FaceBox(0, 90, 15, 10, 0.5)
