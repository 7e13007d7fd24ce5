"""A download progress bar: redrawn in place on a terminal, a line per 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """A download progress bar on a terminal (redrawn in place), a line per 10% otherwise."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None):
        self.label = label  # what is downloading
        self.total = total  # bytes expected, None when unknown
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._start = time.perf_counter()
        self._start_bytes: int | None = None
        self._last = 0.0
        self._last_decile = -1
        self._drawn = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self._start_bytes is None:
            self._start_bytes = done
        rate = (done - self._start_bytes) / max(now - self._start, 1e-6)
        mb = f"{done / 1e6:.1f}"
        if self.total:
            fraction = min(done / self.total, 1.0)
            if self._tty:
                if now - self._last < 0.1 and done < self.total:
                    return
                bar = "#" * int(fraction * 30)
                line = (
                    f"\r{self.label} [{bar:<30}] {fraction * 100:3.0f}% "
                    f"{mb}/{self.total / 1e6:.1f} MB {rate / 1e6:.1f} MB/s"
                )
            else:
                decile = int(fraction * 10)
                if decile == self._last_decile:
                    return
                self._last_decile = decile
                line = f"{self.label}: {decile * 10}% ({mb} MB)\n"
        else:
            if now - self._last < (0.1 if self._tty else 5.0):
                return
            line = f"\r{self.label}: {mb} MB" if self._tty else f"{self.label}: {mb} MB\n"
        self._last = now
        self._drawn = self._tty
        self.stream.write(line)
        self.stream.flush()

    def clear(self) -> None:
        """End the in-place line so that the next message starts on its own line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
