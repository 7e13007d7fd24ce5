"""File outputs: a folder of PNGs (000000.png, ...) or a video file."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .resources import Closing

VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


class OutputError(InputError):
    """An output path that cannot be written."""


class FrameSink(Closing, ABC):
    """Receives RGB uint8 frames; a context manager."""

    def __init__(self, path: Path):
        self.path = path  # where the frames go
        self.count = 0  # frames written so far

    @abstractmethod
    def write(self, image: np.ndarray) -> None:
        """Write one H x W x 3 uint8 RGB frame."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close."""


class PngFolderSink(FrameSink):
    """One PNG per frame, named 000000.png, 000001.png, ..."""

    def write(self, image: np.ndarray) -> None:
        target = self.path / f"{self.count:06d}.png"
        if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OutputError(f"Could not write {target}. Check free disk space and permissions.")
        self.count += 1

    def close(self) -> None:
        """Nothing to flush: every PNG is complete once written."""


class VideoFileSink(FrameSink):
    """A video file (.mp4, .avi, .mkv, .mov) through OpenCV; opened at the first frame."""

    def __init__(self, path: Path, fps: float):
        super().__init__(path)
        self.fps = fps  # frames per second written into the file
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.path.suffix.lower()])
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise OutputError(
                    f"Could not open {self.path} for writing video. Check the folder is writable, "
                    "or write a folder of PNGs instead (--output some/folder)."
                )
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _check_writable_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"Cannot create the output {what} {folder}: a file is in the way "
            f"({folder if folder.is_file() else 'a parent path'} is a file). Pass another "
            "--output path."
        ) from None
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output {what} {folder} ({exc.strerror}). Pass a writable "
            "--output path."
        ) from None
    if not os.access(folder, os.W_OK):
        raise OutputError(
            f"The output {what} {folder} is not writable. Pass another --output path."
        )


def open_output(path: str | Path, fps: float = 25.0) -> FrameSink:
    """A folder (no suffix, or an existing folder) or a video file by suffix.

    Checks that the path can be written before any frame is computed.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir() or not suffix:
        _check_writable_folder(path, "folder")
        return PngFolderSink(path)
    if suffix not in VIDEO_SUFFIXES:
        raise OutputError(
            f"Unsupported output {path}: expected a folder (one PNG per frame) or a video file "
            f"ending in {', '.join(VIDEO_SUFFIXES)}."
        )
    _check_writable_folder(path.parent, "folder")
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise OutputError(
            f"Cannot write the output file {path} ({exc.strerror}). Pass a writable --output path."
        ) from None
    return VideoFileSink(path, fps)
