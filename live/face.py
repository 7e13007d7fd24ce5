"""Face detection with the MediaPipe Tasks FaceDetector and the vendored short-range model."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from live.errors import FaceModelError, SettingError, missing_base_dependency
from live.resources import Closing

MODEL_PATH = Path(__file__).resolve().parent / "models" / "face_detection_short_range.tflite"
MODEL_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixels; it may reach a little past the image edge (a cut-off chin)."""

    x: float  # left edge
    y: float  # top edge
    width: float  # box width
    height: float  # box height
    score: float  # detector confidence, 0..1

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) of the box centre."""
        return (self.x + self.width / 2, self.y + self.height / 2)

    @property
    def right(self) -> float:
        """x of the right edge."""
        return self.x + self.width

    @property
    def bottom(self) -> float:
        """y of the bottom edge."""
        return self.y + self.height

    @property
    def side(self) -> float:
        """The larger of width and height."""
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        """width x height."""
        return self.width * self.height

    def clipped(self, width: int, height: int) -> FaceBox:
        """The part of the box inside a width x height image."""
        x0, y0 = min(max(self.x, 0.0), width), min(max(self.y, 0.0), height)
        x1, y1 = min(max(self.right, 0.0), width), min(max(self.bottom, 0.0), height)
        return FaceBox(x0, y0, x1 - x0, y1 - y0, self.score)

    def mirrored(self, image_width: int) -> FaceBox:
        """The same face in the horizontally flipped image."""
        return FaceBox(image_width - self.right, self.y, self.width, self.height, self.score)


RunningMode = Literal["video", "image"]
Preference = Literal["score", "largest"]


def _check_model(path: Path) -> None:
    if not path.is_file():
        raise FaceModelError(
            f"The face detection model {path} is missing.\n"
            "Expected the MediaPipe short-range face detector (.tflite) that ships with "
            "avatarcam in live/models/.\n"
            "Reinstall avatarcam (pip install avatarcam, or pip install -e . in a checkout) or "
            "pass the path of a valid face_detection_short_range.tflite."
        )


@contextlib.contextmanager
def _native_logs_silenced(sink: IO[bytes] | None = None) -> Iterator[None]:
    """Hide the INFO lines MediaPipe's native runtime (LiteRT) writes straight to file
    descriptor 2 when a task starts and stops (into ``sink`` when given, else nowhere);
    Python exceptions still carry any error."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test runner)
        yield
        return
    try:
        if sink is not None:
            os.dup2(sink.fileno(), 2)
            yield
        else:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: Set once the native runtime's one-time warnings have been triggered (and hidden).
_warmed_up = False
#: Warm-up frame sizes: the runtime warns only for input memory it finds misaligned, which
#: depends on where the allocator puts each copy, so a few sizes are tried.
_WARM_UP_SIZES = ((128, 128), (129, 161), (240, 320), (97, 131), (480, 640), (360, 480))


def _warm_up(detector: Any, mp: Any, mode: RunningMode, log: IO[bytes]) -> int:
    """Run the first inferences on blank frames while fd 2 goes to ``log``, until the
    runtime's one-time warnings ("Logging before InitGoogle()", "Input tensor memory is not
    aligned"), which a user cannot act on, have been printed there; returns the last video
    timestamp used."""
    global _warmed_up
    stamp = 0
    for stamp, (height, width) in enumerate(_WARM_UP_SIZES):
        if _warmed_up:
            break
        misaligned = np.zeros(height * width * 3 + 1, np.uint8)[1:].reshape(height, width, 3)
        blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=misaligned)
        if mode == "video":
            detector.detect_for_video(blank, stamp)
        else:
            detector.detect(blank)
        log.seek(0)
        _warmed_up = b"not aligned" in log.read()
    return stamp


class FaceDetector(Closing):
    """Finds the main face in RGB images.

    ``mode="video"`` for streams (timestamps must increase; equal or older ones are bumped
    forward), ``mode="image"`` for unrelated photos. ``prefer`` picks the most confident or
    the largest face when there are several.
    """

    def __init__(
        self,
        mode: RunningMode = "video",
        *,
        min_confidence: float = 0.5,
        prefer: Preference = "score",
        model_path: Path | str | None = None,
    ) -> None:
        if mode not in ("video", "image"):
            raise SettingError(f"Unknown face detector mode {mode!r}: expected 'video' or 'image'.")
        if prefer not in ("score", "largest"):
            raise SettingError(
                f"Unknown face preference {prefer!r}: expected 'score' or 'largest'."
            )
        if not 0.0 <= min_confidence <= 1.0:
            raise SettingError(
                f"Face detection confidence {min_confidence} is out of range: expected a value "
                "from 0 to 1 (default 0.5; lower finds more faces, and more false ones)."
            )
        self._mode: RunningMode = mode
        self._prefer: Preference = prefer
        self._min_confidence = float(min_confidence)
        self._model_path = Path(model_path) if model_path is not None else MODEL_PATH
        _check_model(self._model_path)
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions
            from mediapipe.tasks.python.vision import FaceDetector as MpFaceDetector
            from mediapipe.tasks.python.vision import (
                FaceDetectorOptions,
            )
            from mediapipe.tasks.python.vision import (
                RunningMode as MpRunningMode,
            )
        except ImportError as exc:
            raise missing_base_dependency("mediapipe", "Face detection", exc) from exc
        self._mp = mp
        options = FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self._model_path)),
            running_mode=MpRunningMode.VIDEO if mode == "video" else MpRunningMode.IMAGE,
            min_detection_confidence=self._min_confidence,
        )
        try:
            with tempfile.TemporaryFile() as log, _native_logs_silenced(log):
                self._detector: Any = MpFaceDetector.create_from_options(options)
                last_stamp = _warm_up(self._detector, mp, mode, log)
        except (ValueError, RuntimeError, OSError) as exc:
            raise FaceModelError(
                f"Cannot load the face detection model {self._model_path}: {exc}.\n"
                "Expected an intact MediaPipe face_detection_short_range.tflite "
                f"(sha256 {MODEL_SHA256}).\n"
                "The file is corrupt or not a MediaPipe model: reinstall avatarcam "
                "(pip install avatarcam, or pip install -e . in a checkout)."
            ) from exc
        self._last_timestamp_ms = last_stamp  # the warm-up frames used 0..last_stamp

    @property
    def mode(self) -> RunningMode:
        """ "video" or "image"."""
        return self._mode

    @property
    def min_confidence(self) -> float:
        """Detections below this score are ignored."""
        return self._min_confidence

    def detect_all(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceBox]:
        """Every face found, most confident first."""
        if not (
            isinstance(image_rgb, np.ndarray)
            and image_rgb.dtype == np.uint8
            and image_rgb.ndim == 3
            and image_rgb.shape[2] == 3
        ):
            raise ValueError("detect() expects an H x W x 3 uint8 RGB numpy array")
        if self._detector is None:
            raise RuntimeError("FaceDetector is closed")
        data = image_rgb if image_rgb.flags.c_contiguous else np.ascontiguousarray(image_rgb)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=data)
        if self._mode == "video":
            if timestamp_ms is None:
                timestamp_ms = int(time.perf_counter() * 1000)
            stamp = max(int(timestamp_ms), self._last_timestamp_ms + 1)
            self._last_timestamp_ms = stamp
            result = self._detector.detect_for_video(image, stamp)
        else:
            result = self._detector.detect(image)
        faces = []
        for detection in result.detections:
            box = detection.bounding_box
            score = float(detection.categories[0].score) if detection.categories else 0.0
            faces.append(
                FaceBox(
                    float(box.origin_x),
                    float(box.origin_y),
                    float(box.width),
                    float(box.height),
                    score,
                )
            )
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces

    def detect(self, image_rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceBox | None:
        """The most confident (or, with ``prefer="largest"``, the largest) face, or ``None``."""
        faces = self.detect_all(image_rgb, timestamp_ms)
        if not faces:
            return None
        if self._prefer == "largest":
            return max(faces, key=lambda face: face.area)
        return faces[0]

    def close(self) -> None:
        """Release the MediaPipe task; safe to call more than once."""
        if self._detector is not None:
            with _native_logs_silenced():
                self._detector.close()
            self._detector = None
