"""One run per output: an exclusive lock on each output path, and the clean-up of partial
recordings that a killed run left behind.

Two runs writing the same folder or video at once would mix or lose each other's frames, and
the "output is empty" check cannot see a run that has not written yet. :class:`OutputLock`
takes an exclusive, non-blocking OS lock (``flock``; ``msvcrt.locking`` on Windows) on a lock
file named after the output's absolute path, before the output is checked or opened; a second
run on the same output is refused with a message. The OS drops the lock when the process ends,
however it ends (kill -9 included), so a stale lock never blocks a later run. The lock files
live in the user's temporary folder and are never deleted (deleting one another run may hold
would let two runs lock different files for the same output).

A video is written to a hidden ``.NAME.XXXXXXXX.part.SUFFIX`` file beside its destination and
renamed when it closes (:class:`~live.outputs.VideoFileSink`). A run killed before that leaves
the part file; the next run on the output, once it holds the lock (so no other run writes
it), removes such leftovers and says so.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from .outputs import OutputError
from .resources import Closing

log = logging.getLogger("avatarcam")


def lock_folder() -> Path:
    """Where the lock files live (one per output path, per user)."""
    uid = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    return Path(tempfile.gettempdir()) / f"avatarcam-locks-{uid}"


def _lock_name(output: Path) -> str:
    digest = hashlib.sha256(os.fsencode(output)).hexdigest()[:32]
    return f"{digest}.lock"


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class OutputLock(Closing):
    """Holds the exclusive lock on one output path until closed (a context manager)."""

    def __init__(self, output: Path):
        self.output = Path(os.path.abspath(Path(output).expanduser()))  # the locked output
        folder = lock_folder()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / _lock_name(self.output)  # the lock file
        handle = open(self.path, "a+b")  # noqa: SIM115  (held open until close)
        if not _try_lock(handle):
            handle.close()
            raise OutputError(
                f"Another avatarcam run is writing to {output} right now. Wait for it to "
                "finish (or stop it), or pass another --output."
            )
        self._handle: IO[bytes] | None = handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def part_files(output: Path) -> list[Path]:
    """Partial recordings of ``output`` (a video path) that a run left beside it."""
    output = Path(output).expanduser()
    pattern = re.compile(
        rf"^\.{re.escape(output.stem)}\.[0-9a-f]{{8}}\.part{re.escape(output.suffix)}$"
    )
    folder = output.parent
    if not output.suffix or not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if pattern.match(path.name))


def remove_leftovers(output: Path) -> list[Path]:
    """Remove the partial recordings of ``output`` left by killed runs; call it while holding
    the output's :class:`OutputLock`. Returns what was removed (each is logged)."""
    removed = []
    for path in part_files(output):
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError as exc:
            log.warning("could not remove %s, left by an interrupted run: %s", path, exc)
            continue
        log.warning(
            "removed %s (%d bytes): an unfinished recording left by a run that was killed "
            "before it could save it",
            path,
            size,
        )
        removed.append(path)
    return removed
