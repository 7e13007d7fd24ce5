"""Per-frame stages shared by offline runs and the live loop: framing and avatar preparation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .avatars import AvatarImage
from .face import FaceBox, FaceDetector
from .framing import CropBox, FaceTracker, FramingConfig, crop_square, frame_avatar

log = logging.getLogger("avatarcam")

#: Face detection runs on a copy at most this wide: MediaPipe's short-range detector looks at
#: 128 x 128 pixels anyway, so a 720p or 1080p frame only costs it a bigger copy and resize.
DETECT_WIDTH = 640


@dataclass(frozen=True)
class Crop:
    """The model-sized driving crop of one camera frame."""

    image: np.ndarray | None  # R x R x 3 uint8; None when there is no usable face
    box: CropBox | None  # the square in camera-frame pixels
    status: str  # "resize", "tracking", "holding" or "lost"


class Cropper(Protocol):
    """Turns a camera frame into the model-sized driving crop, written into ``out`` (an
    R x R x 3 uint8 buffer the caller owns; :attr:`Crop.image` is ``out`` or None)."""

    def __call__(self, frame: np.ndarray, timestamp: float, out: np.ndarray) -> Crop: ...


def resize_square(image: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize to size x size (no copy when it already is); INTER_AREA when shrinking."""
    height, width = image.shape[:2]
    if height == size and width == size:
        if out is None:
            return image
        out[...] = image
        return out
    interpolation = cv2.INTER_AREA if min(height, width) > size else cv2.INTER_LINEAR
    if out is None:
        return cv2.resize(image, (size, size), interpolation=interpolation)
    return cv2.resize(image, (size, size), dst=out, interpolation=interpolation)


class ResizeCropper:
    """--no-crop: the whole frame, resized to the model resolution."""

    def __init__(self, resolution: int):
        self.resolution = resolution  # model input size

    def __call__(self, frame: np.ndarray, timestamp: float, out: np.ndarray) -> Crop:
        height, width = frame.shape[:2]
        crop = resize_square(frame, self.resolution, out)
        return Crop(crop, CropBox(0.0, 0.0, float(max(width, height))), "resize")


class FaceCropper:
    """Finds the face (MediaPipe, video mode), smooths the crop and cuts it out.

    The detector runs ``framing.detect_hz`` times a second on a downscaled copy; between
    detections the tracker follows the last face found. It runs again at once when the last
    detection found no face, the frame size or clock changed, or after :meth:`reset` or
    :meth:`redetect`."""

    def __init__(self, resolution: int, detector: FaceDetector, framing: FramingConfig):
        self.resolution = resolution  # model input size
        self.detector = detector  # video-mode face detector, owned by the caller
        self.tracker = FaceTracker(framing)  # smoothing and hold/lost logic
        self.detections = 0  # detector calls so far
        self._interval = 1 / framing.detect_hz if framing.detect_hz > 0 else 0.0
        self._face: FaceBox | None = None
        self._detected: tuple[float, int, int] | None = None  # (timestamp, width, height)
        self._redetect = False  # set from any thread: detect on the next frame
        self._small: np.ndarray | None = None  # the downscaled copy detection runs on

    def reset(self) -> None:
        """Forget the face tracked so far (the camera view changed, e.g. mirrored)."""
        self.tracker.reset()
        self._face = None
        self._detected = None

    def redetect(self) -> None:
        """Detect the face on the next frame (e.g. on recalibrate); safe from any thread."""
        self._redetect = True

    def _due(self, timestamp: float, width: int, height: int) -> bool:
        if self._face is None or self._detected is None or self._redetect:
            return True
        since, *size = self._detected
        return size != [width, height] or not 0 <= timestamp - since < self._interval - 1e-3

    @property
    def last_face(self) -> FaceBox | None:
        """The face box the last detection found (None when none was found)."""
        return self._face

    def __call__(self, frame: np.ndarray, timestamp: float, out: np.ndarray) -> Crop:
        height, width = frame.shape[:2]
        if self._due(timestamp, width, height):
            self._redetect = False
            self._face = self._detect(frame, round(timestamp * 1000))
            self._detected = (timestamp, width, height)
            self.detections += 1
        face = self._face
        state = self.tracker.update(face, timestamp, (width, height))
        if state.box is None:
            return Crop(None, None, state.status)
        return Crop(
            crop_square(frame, state.box, self.resolution, out),
            state.box,
            state.status,
        )

    def _detect(self, frame: np.ndarray, timestamp_ms: int) -> FaceBox | None:
        """The face in ``frame`` (camera pixels), found on a copy at most DETECT_WIDTH wide."""
        height, width = frame.shape[:2]
        if width <= DETECT_WIDTH:
            return self.detector.detect(frame, timestamp_ms)
        factor = DETECT_WIDTH / width
        shape = (max(1, round(height * factor)), DETECT_WIDTH, 3)
        if self._small is None or self._small.shape != shape:
            self._small = np.empty(shape, np.uint8)
        cv2.resize(frame, shape[1::-1], dst=self._small, interpolation=cv2.INTER_AREA)
        face = self.detector.detect(self._small, timestamp_ms)
        if face is None:
            return None
        scale_x, scale_y = width / shape[1], height / shape[0]
        return FaceBox(
            face.x * scale_x,
            face.y * scale_y,
            face.width * scale_x,
            face.height * scale_y,
            face.score,
        )


@dataclass(frozen=True)
class PreparedAvatar:
    """An avatar photo framed for the model, computed once at start."""

    name: str  # file name
    image: np.ndarray  # R x R x 3 uint8, the framed avatar
    face_found: bool  # False when the photo had no detectable face (centre crop)


def prepare_avatars(
    avatars: list[AvatarImage], resolution: int, crop: bool, framing: FramingConfig
) -> list[PreparedAvatar]:
    """Frame each avatar photo around its face (or resize it with ``crop=False``)."""
    if not crop:
        return [PreparedAvatar(a.name, resize_square(a.image, resolution), True) for a in avatars]
    prepared = []
    with FaceDetector("image") as detector:
        for avatar in avatars:
            box, found = frame_avatar(avatar.image, detector, framing)
            if not found:
                log.warning(
                    "warning: no face found in the avatar %s; using a centre crop. A portrait "
                    "with the face clearly visible animates best.",
                    avatar.path,
                )
            prepared.append(
                PreparedAvatar(avatar.name, crop_square(avatar.image, box, resolution), found)
            )
    return prepared
