"""File outputs: a folder of PNGs (000000.png, ...) or a video file written with PyAV.

Videos: ``.mp4``, ``.mov``, ``.mkv`` and ``.avi`` hold H.264 (libx264, CRF 18, yuv420p: plays
in browsers, players and editors), ``.webm`` holds VP9 (libvpx-vp9, CRF 31). A video is written
to a hidden temporary file beside its destination and renamed into place when it is closed, so
an earlier file is only replaced by a finished one, and a run that produced no frame leaves
nothing behind. A PNG folder that this run created and never wrote to is removed.

An output is never written over an input: :func:`check_output_target` refuses, before anything
is written, an output that is an input, lies inside an input folder, or is a folder holding an
input; an output that already holds something is refused unless ``overwrite``, which replaces
exactly what avatarcam writes there (the video file, or the ``NNNNNN.png`` frames).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, missing_base_dependency
from .resources import Closing


class OutputError(InputError):
    """An output path that cannot be written, or must not be."""


@dataclass(frozen=True)
class VideoFormat:
    """How one file suffix is encoded."""

    container: str  # FFmpeg muxer name
    codec: str  # FFmpeg encoder name
    pixel_format: str  # encoder pixel format
    options: tuple[tuple[str, str], ...]  # encoder options (quality)


_H264 = ("libx264", "yuv420p", (("crf", "18"), ("preset", "medium")))
VIDEO_FORMATS: dict[str, VideoFormat] = {
    ".mp4": VideoFormat("mp4", *_H264),
    ".mov": VideoFormat("mov", *_H264),
    ".mkv": VideoFormat("matroska", *_H264),
    ".avi": VideoFormat("avi", *_H264),
    ".webm": VideoFormat(
        "webm", "libvpx-vp9", "yuv420p", (("crf", "31"), ("b", "0"), ("deadline", "good"))
    ),
}
VIDEO_SUFFIXES = tuple(VIDEO_FORMATS)
FRAME_NAME = re.compile(r"^\d{6}\.png$")  # the files a PNG folder output owns


class FrameSink(Closing, ABC):
    """Receives RGB uint8 frames; a context manager."""

    def __init__(self, path: Path, size: tuple[int, int] | None = None):
        self.path = path  # where the frames go
        self.size = size  # (width, height) frames are resized to; None: as given
        self.count = 0  # frames written so far (a timed video: slots of its rate it covers)

    def _sized(self, image: np.ndarray) -> np.ndarray:
        if self.size is None or image.shape[1::-1] == self.size:
            return image
        from .virtualcam import fit_frame

        return fit_frame(image, self.size[0], self.size[1], "letterbox")

    @abstractmethod
    def write(self, image: np.ndarray) -> None:
        """Write one H x W x 3 uint8 RGB frame."""

    def send(self, image: np.ndarray, pts: float) -> None:
        """Write one frame shown from ``pts`` (seconds on the stream's clock) on; sinks without
        timing (a folder of PNGs) write it as the next frame."""
        self.write(image)

    @abstractmethod
    def close(self) -> None:
        """Flush and close; an output that received no frame is removed."""


def _write_failed(target: Path, exc: OSError | None = None) -> OutputError:
    if exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    else:
        reason = exc.strerror if exc is not None and exc.strerror else "the write failed"
    return OutputError(
        f"Could not write {target} ({reason}). Free some disk space or pass another --output."
    )


class PngFolderSink(FrameSink):
    """One PNG per frame, named 000000.png, 000001.png, ...

    With ``overwrite`` the frames of an earlier run are deleted when the first new frame is
    written (not before: a run that fails early leaves them alone); other files are kept.
    """

    def __init__(
        self,
        path: Path,
        *,
        created: bool = False,
        overwrite: bool = False,
        size: tuple[int, int] | None = None,
    ):
        super().__init__(path, size)
        self.created = created  # this run created the folder (removed again if left empty)
        self.overwrite = overwrite

    def write(self, image: np.ndarray) -> None:
        if self.count == 0 and self.overwrite:
            for old in self.path.iterdir():
                if FRAME_NAME.match(old.name) and old.is_file():
                    old.unlink()
        target = self.path / f"{self.count:06d}.png"
        bgr = cv2.cvtColor(self._sized(image), cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".png", bgr)
        if not ok:
            raise _write_failed(target)
        try:
            target.write_bytes(data.tobytes())
        except OSError as exc:
            raise _write_failed(target, exc) from None
        self.count += 1

    def close(self) -> None:
        if self.count == 0 and self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()


class VideoFileSink(FrameSink):
    """A video file through PyAV (FFmpeg); the encoder is opened at the first frame.

    ``timed`` (live and paced runs): :meth:`send` places each frame at its presentation time,
    rounded to a slot of the rate ``fps`` (the file's time base), and encodes it once: a gap
    between frames is a gap between timestamps (variable frame rate; AVI, which has no
    timestamps, gets FFmpeg's empty "repeat" chunks), so a slow engine costs no extra
    encoding however high ``fps`` is. A frame whose slot is taken is held back and shown from
    the next free slot unless a newer frame takes it; :meth:`finish` marks the input's end
    with one more copy of the last frame, so the recording plays as long as the run showed it.
    Otherwise (and with :meth:`write`) each frame is the next one in the file.
    """

    def __init__(
        self, path: Path, fps: float, size: tuple[int, int] | None = None, *, timed: bool = False
    ):
        super().__init__(path, size)
        self.timed = timed  # place frames by their presentation time
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps  # frames per second written into the file
        self.format = VIDEO_FORMATS[path.suffix.lower()]
        # Written beside the destination under a hidden name, renamed on close.
        self.temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part{path.suffix}")
        self._container = None
        self._stream = None
        self._rate = Fraction(fps).limit_denominator(1001)
        self._origin: float | None = None  # presentation time of the first frame (timed)
        self._shown = None  # the last av.VideoFrame encoded (timed: copied at the end)
        self._held = None  # timed: the newest frame whose slot was taken, for the next slot

    def _open(self, width: int, height: int) -> None:
        try:
            import av
        except ImportError as exc:
            raise missing_base_dependency("av", "Writing video files", exc) from exc
        if width % 2 or height % 2:
            raise OutputError(
                f"Cannot encode {width}x{height} video: {self.format.codec} needs even sizes. "
                "Pass an even --output-size, e.g. 256x256."
            )
        try:
            self._container = av.open(str(self.temporary), "w", format=self.format.container)
            stream = self._container.add_stream(self.format.codec, rate=self._rate)
        except (OSError, av.FFmpegError) as exc:
            self._discard()
            raise OutputError(
                f"Could not open {self.path} for writing video ({exc}). Check the folder is "
                "writable, or write a folder of PNGs instead (--output some/folder)."
            ) from None
        stream.width, stream.height = width, height
        stream.pix_fmt = self.format.pixel_format
        stream.options = dict(self.format.options)
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        self._encode(self._frame(image))

    def send(self, image: np.ndarray, pts: float) -> None:
        if not self.timed:
            self.write(image)
            return
        if self._origin is None:
            self._origin = pts
        slot = self._slot(pts)
        if slot < self.count:  # this slot already holds a frame: the newest is held back
            self._held = self._frame(image)
            return
        self._show_held(slot)
        self._encode(self._frame(image), slot)

    def _slot(self, pts: float) -> int:
        return round((pts - self._origin) * self._rate)

    def _show_held(self, slot: int) -> None:
        """Timed: the frame held back takes the next free slot if it comes before ``slot``."""
        held, self._held = self._held, None
        if held is not None and self.count < slot:
            self._encode(held, self.count)

    def finish(self, pts: float) -> None:
        """Timed: the input's last frame was at ``pts``; the frame shown last stays through
        that frame's slot (one more copy in the last slot), so the recording ends where the
        input did."""
        if not self.timed or self._origin is None or self._shown is None:
            return
        end = self._slot(pts) + 1
        self._show_held(end)
        if self.count < end:
            self._encode(self._shown, end - 1)

    def _frame(self, image: np.ndarray):
        import av

        image = self._sized(image)
        if self._stream is None:
            self._open(image.shape[1], image.shape[0])
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")

    def _encode(self, frame, slot: int | None = None) -> None:
        """Encode ``frame`` at ``slot`` (timed) or as the next frame."""
        slot = self.count if slot is None else slot
        frame.pts = slot
        frame.time_base = 1 / self._rate
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:
            raise _write_failed(self.path, exc) from None
        self._shown = frame
        self.count = slot + 1

    def _discard(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        with contextlib.suppress(OSError):
            self.temporary.unlink()

    def close(self) -> None:
        if self._container is None:
            with contextlib.suppress(OSError):
                self.temporary.unlink()
            return
        if self.count == 0:
            self._discard()
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self.temporary, self.path)
        except OSError as exc:
            self._discard()
            raise _write_failed(self.path, exc) from None


def _check_writable_folder(folder: Path, what: str) -> bool:
    """Create ``folder`` if needed (True when it was created) and check it is writable."""
    existed = folder.is_dir()
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
    return not existed


def _is_folder_output(path: Path) -> bool:
    return path.is_dir() or not path.suffix


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser())).resolve()


def check_output_target(output: Path, inputs: Iterable[Path], overwrite: bool = False) -> None:
    """Refuse an output that would touch an input, or hold something already (unless
    ``overwrite``), before anything is written. ``inputs`` are the avatar and driving paths
    (files or folders; a camera is not a path and is left out)."""
    target = _resolved(output)
    for given in inputs:
        if not given.exists():
            continue
        source = _resolved(given)
        if target == source:
            raise OutputError(
                f"--output {output} is the input {given}: that would write over it. Pass a new "
                "folder or file for --output."
            )
        if source.is_dir() and target.is_relative_to(source):
            raise OutputError(
                f"--output {output} is inside the input folder {given}: the frames written "
                "there would mix with (or replace) the input. Pass --output outside it."
            )
        if source.is_file() and source.parent == target and _is_folder_output(output):
            raise OutputError(
                f"--output {output} is the folder that holds the input {given}: frames written "
                "there could replace it. Pass a new folder for --output."
            )
    if not target.exists() or overwrite:
        return
    if target.is_dir():
        entries = sorted(p.name for p in target.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise OutputError(
                f"The output folder {output} is not empty ({len(entries)} files: {shown}). "
                "Pass an empty or new folder, or --overwrite to replace the frames an earlier "
                "run wrote there (NNNNNN.png; other files are kept)."
            )
    elif target.stat().st_size > 0:
        raise OutputError(
            f"The output file {output} exists. Pass another --output, or --overwrite to "
            "replace it (it is replaced only when the new video is complete)."
        )


def open_output(
    path: str | Path,
    fps: float = 25.0,
    *,
    overwrite: bool = False,
    size: tuple[int, int] | None = None,
    timed: bool = False,
) -> FrameSink:
    """A folder (no suffix, or an existing folder) or a video file by suffix.

    Checks that the path can be written before any frame is computed. ``size`` (width,
    height) resizes the frames (letterboxed); None keeps the model's size. ``timed``: a video
    is written on the frames' presentation times (see :class:`VideoFileSink`).
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir() or not suffix:
        created = _check_writable_folder(path, "folder")
        return PngFolderSink(path, created=created, overwrite=overwrite, size=size)
    if suffix not in VIDEO_FORMATS:
        raise OutputError(
            f"Unsupported output {path}: expected a folder (one PNG per frame) or a video file "
            f"ending in {', '.join(VIDEO_SUFFIXES)}."
        )
    _check_writable_folder(path.parent, "folder")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"Cannot write the output file {path}. Pass a writable --output path.")
    return VideoFileSink(path, fps, size, timed=timed)
