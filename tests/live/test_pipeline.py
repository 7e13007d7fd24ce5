"""Tests for live.pipeline: croppers write the crop into the buffer their caller owns."""

from __future__ import annotations

import numpy as np

from live.face import FaceBox
from live.framing import FramingConfig
from live.pipeline import FaceCropper, ResizeCropper


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
