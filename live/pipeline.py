"""The per-frame stages shared by offline runs and the live loop: crop, animate, write."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .animator import AnimatedFrame, Animator
from .capture import Frame
from .outputs import FrameSink
from .progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crop:
    """The model-sized driving crop of one camera frame."""

    image: np.ndarray | None  # R x R x 3 uint8, None when no usable face (fallback needed)
    box: tuple[float, float, float] | None  # (x, y, side) of the square in frame pixels
    status: str  # "resize", "tracking", "holding" or "lost"


class Cropper(Protocol):
    """Turns a camera frame into the model-sized driving crop."""

    def __call__(self, frame: Frame) -> Crop: ...


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
        self._buffer = np.empty((resolution, resolution, 3), np.uint8)

    def __call__(self, frame: Frame) -> Crop:
        height, width = frame.image.shape[:2]
        crop = resize_square(frame.image, self.resolution, self._buffer)
        return Crop(crop, (0.0, 0.0, float(max(width, height))), "resize")


def process_stream(
    frames: Iterable[Frame],
    cropper: Cropper,
    animator: Animator,
    sinks: list[FrameSink],
    progress: Progress | None = None,
) -> int:
    """Every frame, in order, through crop -> animate -> sinks (offline; no frame dropped).

    Frames without a usable face repeat the last animated frame (or the avatar at rest before
    the first one). Returns the number of frames written.
    """
    last: np.ndarray | None = None
    out = np.empty((animator.resolution, animator.resolution, 3), np.uint8)
    written = 0
    for frame in frames:
        crop = cropper(frame)
        if crop.image is not None:
            animated: AnimatedFrame = animator.animate(crop.image, out)
            last = animated.image
        elif last is None:
            last = animator.rest_image
        for sink in sinks:
            sink.write(last)
        written += 1
        if progress is not None:
            progress.update()
    return written
