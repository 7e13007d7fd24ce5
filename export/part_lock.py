"""One download per ``NAME.part`` at a time: an advisory lock on ``NAME.part.lock``.

A second run that wants the same file waits while the first one makes progress (its ``.part``
grows), and gives up with a message when it stalls. The lock is released when its holder
closes the file, exits or crashes, so a stale lock file never blocks anything.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .errors import UserError

STALL_S = 60.0  # give up waiting when the other download's .part has not grown for this long
POLL_S = 0.2  # how often the lock is tried again


class DownloadBusy(UserError):
    """Another run holds the download of this file and makes no progress."""


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def part_lock(part: Path, stream: TextIO, stall_s: float | None = None) -> Iterator[None]:
    """Hold the lock of ``part`` for the body of the ``with``; waits for another holder while
    its download progresses, raises :class:`DownloadBusy` when it stalls for ``stall_s``.

    The lock file is removed on release; a waiter that then holds a removed file's lock opens
    the new one instead, so two runs never both hold it.
    """
    stall_s = STALL_S if stall_s is None else stall_s
    lock = part.with_name(part.name + ".lock")
    name = part.name.removesuffix(".part")
    seen, since, told = _size(part), time.monotonic(), False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if _try_lock(fd) and _same_file(fd, lock):
            break
        os.close(fd)
        if not told:
            stream.write(f"another download of {name} is in progress (lock {lock}): waiting\n")
            stream.flush()
            told = True
        time.sleep(POLL_S)
        now_size = _size(part)
        if now_size != seen:
            seen, since = now_size, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise DownloadBusy(
                f"Another download of {name} holds {lock} and has made no progress for "
                f"{stall_s:.0f} s. Wait for that run to finish, or stop it, and run again."
            )
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)  # releases the lock
