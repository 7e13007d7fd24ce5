"""What the command prints: its own messages plainly, the libraries' chatter only with ``-v``.

Libraries log things a user cannot act on (c2pa's search for its native library, FFmpeg's
demuxer complaints about a file that our own error then explains). Without ``-v`` their lines
below warning level are dropped and FFmpeg inside OpenCV is silenced; with ``-v`` every line
shows, a library's marked ``[library NAME]`` so that it is not read as avatarcam's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import TextIO

#: Top-level logger names of this project; every other logger is a library's.
OWN_LOGGERS = ("avatarcam", "engines", "export", "live", "benchmarks", "__main__")
#: OpenCV reads this once, when its FFmpeg backend first opens something (-8: AV_LOG_QUIET).
OPENCV_FFMPEG_LOGLEVEL = "OPENCV_FFMPEG_LOGLEVEL"
#: The logger FFmpeg's own lines (written by C code to stderr) are passed to with -v.
FFMPEG_LOGGER = "FFmpeg"


def is_library(name: str) -> bool:
    """Whether the logger ``name`` belongs to a library rather than to this project."""
    return name.split(".", 1)[0] not in OWN_LOGGERS


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if is_library(record.name):
            prefix = f"[library {record.name}] "
            return "\n".join(prefix + line for line in text.splitlines())
        return text


class _Chatter(logging.Filter):
    """Drops a library's lines below warning level unless ``verbose``."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.WARNING or not is_library(record.name)


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr): INFO, or DEBUG with ``verbose``; libraries as described in
    the module doc."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Lines("%(message)s"))
    handler.addFilter(_Chatter(verbose))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    if not verbose:
        os.environ.setdefault(OPENCV_FFMPEG_LOGLEVEL, "-8")


def verbose_logging() -> bool:
    """Whether library chatter is shown (``-v``)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def native_lines_logged() -> Iterator[None]:
    """With ``-v``: what C libraries (FFmpeg in OpenCV) write to stderr inside this block is
    logged as ``[library FFmpeg]`` lines instead. Without it (they are silenced), nothing."""
    if not verbose_logging():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr descriptor: leave it alone
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(64_000).decode("utf-8", "replace")
            log = logging.getLogger(FFMPEG_LOGGER)
            for line in text.splitlines():
                if line.strip():
                    log.debug("%s", line)
