"""Image decoding: image files to RGB arrays, image folders in frame order, OpenCV quieting."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from live.errors import InputError
from live.logs import native_lines_logged

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while probing; our errors say what went wrong."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with native_lines_logged():  # FFmpeg's own lines: [library FFmpeg] with -v only
            yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    """A new H x W x 3 RGB array from a decoded uint8 gray, BGR(A) or RGB(A) image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode one image file to RGB uint8, or raise InputError naming it."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(
            f"Cannot read the image {path}: {exc}.\nCheck that the file exists and is readable."
        ) from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(
            f"Cannot decode the image {path}.\n"
            f"Expected a valid image ({', '.join(IMAGE_EXTENSIONS)}); the file is empty, "
            "truncated or not an image. Replace or remove it."
        )
    return to_rgb(image, bgr=True)


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders frame2.png before frame10.png."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts if part)


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder (accepted extensions, any case), sorted by file name."""
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=_natural_key)
