"""Square face crops framed like FOMM's training data, smoothed over time.

The MediaPipe face box is tight (brows to chin); the crop is ``scale`` times its larger side,
moved up by ``vertical_shift`` face heights so hair and chin show as in the VoxCeleb crops.
A One Euro filter steadies the crop while the face is still and follows it when it moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from live.errors import SettingError
from live.face import FaceBox, FaceDetector


def _check_range(name: str, value: float, low: float, high: float, hint: str) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise SettingError(
            f"Framing setting {name}={value} is out of range: expected {low:g} to {high:g}. {hint}"
        )


@dataclass(frozen=True)
class FramingConfig:
    """How the face crop is placed and smoothed."""

    # Crop side = scale x the larger side of the face box (1.0-4.0; larger shows more head).
    scale: float = 1.8
    # Move the crop centre up by this many face-box heights (negative: down; -1.0 to 1.0).
    # The detector's box runs from the brows to the chin; 0.2 shows the whole head (hair)
    # with a little room under the chin, like the VoxCeleb crops.
    vertical_shift: float = 0.2
    # One Euro minimum cutoff in Hz: lower = steadier crop when still, but more lag.
    min_cutoff: float = 1.0
    # One Euro speed coefficient (per frame-size per second): higher = less lag when moving.
    beta: float = 5.0
    # One Euro cutoff in Hz for the speed estimate.
    d_cutoff: float = 1.0
    # Keep the last crop this many seconds after the face is lost, then report "lost".
    hold_seconds: float = 0.5
    # Face detections per second (0-120; 0: every frame); between them the crop follows the
    # last face found, and a frame without a face is searched again at once.
    detect_hz: float = 5.0

    def __post_init__(self) -> None:
        _check_range(
            "scale", self.scale, 1.0, 4.0, "The default 1.8 frames the head like the training data."
        )
        _check_range(
            "vertical_shift",
            self.vertical_shift,
            -1.0,
            1.0,
            "It is a fraction of the face height; the default is 0.2.",
        )
        _check_range(
            "min_cutoff",
            self.min_cutoff,
            0.01,
            30.0,
            "It is a frequency in Hz; the default is 1.0.",
        )
        _check_range(
            "beta", self.beta, 0.0, 1000.0, "0 disables speed adaptation; the default is 5.0."
        )
        _check_range(
            "d_cutoff", self.d_cutoff, 0.01, 30.0, "It is a frequency in Hz; the default is 1.0."
        )
        _check_range(
            "hold_seconds",
            self.hold_seconds,
            0.0,
            60.0,
            "It is a time in seconds; the default is 0.5.",
        )
        _check_range(
            "detect_hz",
            self.detect_hz,
            0.0,
            120.0,
            "It is detections per second (0: every frame); the default is 5.",
        )


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel and Vogel, CHI 2012) over a small float vector.

    Each call takes the new sample and its time in seconds and returns the filtered vector
    (an internal buffer, valid until the next call). Equal or older timestamps return the
    previous estimate unchanged.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float, size: int = 3) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._value = np.zeros(size)  # filtered value
        self._speed = np.zeros(size)  # filtered derivative
        self._scratch = np.zeros(size)
        self._weight = np.zeros(size)
        self._time: float | None = None

    @property
    def initialized(self) -> bool:
        """False until the first sample (and after :meth:`reset`)."""
        return self._time is not None

    def reset(self) -> None:
        """Forget the history: the next sample is passed through unfiltered."""
        self._time = None

    @staticmethod
    def _alpha(period: float, cutoff: float) -> float:
        rate = 2.0 * math.pi * cutoff * period
        return rate / (rate + 1.0)

    def __call__(self, sample: np.ndarray, timestamp: float) -> np.ndarray:
        if self._time is None:
            self._value[:] = sample
            self._speed[:] = 0.0
            self._time = timestamp
            return self._value
        period = timestamp - self._time
        if period <= 0.0:
            return self._value
        self._time = timestamp
        # Derivative of the signal, low-passed at d_cutoff.
        np.subtract(sample, self._value, out=self._scratch)
        self._scratch *= self._alpha(period, self.d_cutoff) / period
        self._speed *= 1.0 - self._alpha(period, self.d_cutoff)
        self._speed += self._scratch
        # Cutoff grows with speed; weight of the old value is 1 / (1 + 2 pi fc T).
        np.abs(self._speed, out=self._weight)
        self._weight *= self.beta
        self._weight += self.min_cutoff
        self._weight *= 2.0 * math.pi * period
        self._weight += 1.0
        np.reciprocal(self._weight, out=self._weight)
        # value = sample + (1 - alpha) * (previous - sample)
        np.subtract(self._value, sample, out=self._scratch)
        self._scratch *= self._weight
        np.add(sample, self._scratch, out=self._value)
        return self._value


@dataclass(frozen=True)
class CropBox:
    """A square in source pixels; it may extend past the image (padded with black)."""

    x: float  # left edge
    y: float  # top edge
    size: float  # side length

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) of the centre."""
        return (self.x + self.size / 2, self.y + self.size / 2)

    def contains(self, face: FaceBox, tolerance: float = 1e-6) -> bool:
        """True when the face box lies inside this square."""
        return (
            face.x >= self.x - tolerance
            and face.y >= self.y - tolerance
            and face.right <= self.x + self.size + tolerance
            and face.bottom <= self.y + self.size + tolerance
        )

    def scaled(self, factor: float) -> CropBox:
        """The same square in an image resized by ``factor``."""
        return CropBox(self.x * factor, self.y * factor, self.size * factor)


def crop_box_for_face(face: FaceBox, config: FramingConfig) -> CropBox:
    """The unsmoothed crop for one face box."""
    side = config.scale * face.side
    center_x, center_y = face.center
    center_y -= config.vertical_shift * face.height
    return CropBox(center_x - side / 2, center_y - side / 2, side)


def _containing(box: CropBox, face: FaceBox) -> CropBox:
    """Shift (and if needed grow) ``box`` the least so that it contains ``face``."""
    size = max(box.size, face.side)
    x = min(max(box.x, face.right - size), face.x)
    y = min(max(box.y, face.bottom - size), face.y)
    if (x, y, size) == (box.x, box.y, box.size):
        return box
    return CropBox(x, y, size)


TrackStatus = Literal["tracking", "holding", "lost"]


@dataclass(frozen=True)
class TrackState:
    """Result of :meth:`FaceTracker.update`."""

    box: CropBox | None  # crop to use; None when lost
    status: TrackStatus  # "tracking": face seen now; "holding": recently; "lost": not for long
    face: FaceBox | None  # the face seen in this frame, if any


class FaceTracker:
    """Turns per-frame face boxes into a steady crop box."""

    def __init__(self, config: FramingConfig | None = None) -> None:
        self.config = config or FramingConfig()
        self._filter = OneEuroFilter(
            self.config.min_cutoff, self.config.beta, self.config.d_cutoff, size=3
        )
        self._sample = np.zeros(3)
        self._reference = 0.0
        self._box: CropBox | None = None
        self._last_seen: float | None = None
        self._status: TrackStatus = "lost"

    @property
    def status(self) -> TrackStatus:
        """Status of the last update."""
        return self._status

    def reset(self) -> None:
        """Forget the face: the next face starts a fresh track."""
        self._filter.reset()
        self._box = None
        self._last_seen = None
        self._status = "lost"

    def update(
        self, face: FaceBox | None, timestamp: float, frame_size: tuple[int, int]
    ) -> TrackState:
        """Feed this frame's face (or None) at ``timestamp`` seconds; ``frame_size`` = (w, h)."""
        if face is None:
            if self._box is None or self._last_seen is None:
                self._status = "lost"
                return TrackState(None, "lost", None)
            if timestamp - self._last_seen <= self.config.hold_seconds:
                self._status = "holding"
                return TrackState(self._box, "holding", None)
            self._status = "lost"
            self._box = None
            self._filter.reset()
            return TrackState(None, "lost", None)
        reference = float(max(frame_size))
        if (
            self._status == "lost"
            or reference != self._reference
            or (self._last_seen is not None and timestamp < self._last_seen)
        ):
            self._filter.reset()
        self._reference = reference
        raw = crop_box_for_face(face, self.config)
        center_x, center_y = raw.center
        self._sample[0] = center_x / reference
        self._sample[1] = center_y / reference
        self._sample[2] = raw.size / reference
        smooth = self._filter(self._sample, timestamp)
        size = float(smooth[2]) * reference
        box = CropBox(
            float(smooth[0]) * reference - size / 2, float(smooth[1]) * reference - size / 2, size
        )
        self._box = _containing(box, face)
        self._last_seen = timestamp
        self._status = "tracking"
        return TrackState(self._box, "tracking", face)


def crop_square(
    image: np.ndarray, box: CropBox, size: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Crop ``box`` from ``image`` (black where it leaves the image), resized to size x size.

    Writes into ``out`` when given (shape ``(size, size) + image.shape[2:]``, same dtype).
    """
    shape = (size, size, *image.shape[2:])
    if out is None:
        out = np.empty(shape, image.dtype)
    elif out.shape != shape or out.dtype != image.dtype:
        raise ValueError(
            f"out must have shape {shape} and dtype {image.dtype}, got {out.shape} {out.dtype}"
        )
    height, width = image.shape[:2]
    side = max(round(box.size), 1)
    left, top = round(box.x), round(box.y)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    if x0 >= x1 or y0 >= y1:
        out[:] = 0
        return out
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    region = image[y0:y1, x0:x1]
    if (x0, y0, x1, y1) == (left, top, left + side, top + side):
        _resize(region, out, interpolation)
        return out
    factor = size / side
    u0, v0 = round((x0 - left) * factor), round((y0 - top) * factor)
    u1, v1 = round((x1 - left) * factor), round((y1 - top) * factor)
    u1, v1 = min(max(u1, u0 + 1), size), min(max(v1, v0 + 1), size)
    u0, v0 = min(u0, u1 - 1), min(v0, v1 - 1)
    out[:v0] = 0
    out[v1:] = 0
    out[v0:v1, :u0] = 0
    out[v0:v1, u1:] = 0
    _resize(region, out[v0:v1, u0:u1], interpolation)
    return out


def _resize(region: np.ndarray, out: np.ndarray, interpolation: int) -> None:
    """Resize ``region`` into ``out``. A shrink by 2x or more first averages k x k blocks
    (OpenCV's fast integer INTER_AREA path; the region loses under k pixels at its right and
    bottom edges, under one output pixel), so the slow fractional INTER_AREA only sees the
    last step: about 3x cheaper for a 720p face crop."""
    height, width = out.shape[:2]
    k = min(region.shape[1] // width, region.shape[0] // height)
    if interpolation == cv2.INTER_AREA and k >= 2:
        small = (region.shape[1] // k, region.shape[0] // k)
        region = cv2.resize(
            region[: small[1] * k, : small[0] * k], small, interpolation=cv2.INTER_AREA
        )
    cv2.resize(region, (width, height), dst=out, interpolation=interpolation)


def center_crop_box(width: int, height: int) -> CropBox:
    """The largest centred square of a width x height image."""
    side = min(width, height)
    return CropBox((width - side) / 2, (height - side) / 2, float(side))


def frame_avatar(
    image: np.ndarray, detector: FaceDetector, config: FramingConfig | None = None
) -> tuple[CropBox, bool]:
    """Crop box for an avatar photo and whether a face was found.

    The box is kept inside the photo (shifted, and shrunk to the photo's shorter side when
    needed) so no black borders appear; without a face it is :func:`center_crop_box`.
    """
    config = config or FramingConfig()
    height, width = image.shape[:2]
    face = detector.detect(image)
    if face is None:
        return center_crop_box(width, height), False
    box = crop_box_for_face(face, config)
    side = min(box.size, float(width), float(height))
    center_x, center_y = box.center
    x = min(max(center_x - side / 2, 0.0), width - side)
    y = min(max(center_y - side / 2, 0.0), height - side)
    return CropBox(x, y, side), True
