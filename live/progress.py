"""Progress for long offline runs: a redrawn line on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports frames done, speed and time left."""

    def __init__(self, total: int | None, label: str = "frames", stream: TextIO | None = None):
        self.total = total  # frames expected, None when unknown
        self.label = label  # what is counted
        self.stream = stream or sys.stderr  # where to report
        self.done = 0  # frames finished
        self._start = time.perf_counter()
        self._last = 0.0
        self._tty = self.stream.isatty()
        self._interval = 0.2 if self._tty else 5.0
        self._open_line = False  # an in-place line is on screen without its newline

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self._last >= self._interval or self.done == self.total:
            self._last = now
            self._write(self._line(now), final=False)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            percent = 100 * self.done / self.total
            return (
                f"{self.done}/{self.total} {self.label} ({percent:.0f}%), {rate:.1f} fps, "
                f"{left:.0f}s left"
            )
        return f"{self.done} {self.label}, {rate:.1f} fps"

    def _write(self, line: str, final: bool) -> None:
        if self._tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self._open_line = not final
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        now = time.perf_counter()
        elapsed = now - self._start
        self._write(f"{self.done} {self.label} in {elapsed:.1f}s", final=True)

    def abort(self) -> None:
        """End the in-place line (without a summary) so that an error or "interrupted"
        printed next starts on a line of its own."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
