"""Downloading a file over HTTP(S), resumable and verified, with messages a user can act on.

The file is written to ``NAME.part`` beside its destination, resumed with an HTTP ``Range``
request after an interruption (a dropped connection is retried at once, a new run continues
where the last one stopped), checked against its size and sha256 (or md5) and only then renamed
into place. A file that does not match is deleted. Only the standard library is used.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import UserError

CHUNK = 1 << 20  # bytes read per call
RETRIES = 5  # reconnections after a dropped connection, per URL
TIMEOUT_S = 30.0  # socket timeout per read
USER_AGENT = "avatarcam-download/1"


class DownloadError(UserError):
    """A download that failed: no network, not found, a web page instead of the file, a full
    disk, or a file that does not match its checksum."""


class _Retry(Exception):
    """The connection dropped mid-body: reconnect and resume."""


@dataclass(frozen=True)
class Expected:
    """What the downloaded file must be."""

    size: int | None  # exact size in bytes, None when unknown
    sha256: str | None  # hex digest
    md5: str | None = None  # hex digest, for publishers that give only md5


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


def _manual(url: str, dest: Path) -> str:
    return f"To do it by hand: download {url} with a browser or curl, and save it as {dest}."


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _check_space(folder: Path, needed: int, dest: Path, url: str) -> None:
    free = _free_bytes(folder)
    if free < needed:
        raise DownloadError(
            f"Not enough disk space in {folder}: the download needs {needed / 1e6:.0f} MB more, "
            f"{free / 1e6:.0f} MB are free. Free some space (or set AVATARCAM_HOME to a folder "
            f"on another disk) and run again; the download resumes.\n{_manual(url, dest)}"
        )


def _open(url: str, start: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _describe_url_error(exc: urllib.error.URLError) -> str:
    reason = exc.reason
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved: no network, or no DNS"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "the connection timed out"
    return str(reason)


def _fetch(url: str, part: Path, expected: Expected, bar: ProgressBar) -> None:
    """Download ``url`` into ``part``, resuming what is there; raises DownloadError or _Retry."""
    start = part.stat().st_size if part.exists() else 0
    if expected.size is not None and start >= expected.size:
        if start > expected.size:
            part.unlink()
            start = 0
        else:
            return  # complete: verified by the caller
    try:
        response = _open(url, start)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the range is past the end: start over
            part.unlink()
            raise _Retry from None
        if exc.code in (404, 410):
            raise DownloadError(f"{url} was not found (HTTP {exc.code}).") from None
        if exc.code in (401, 403, 407):
            raise DownloadError(
                f"{url} refused access (HTTP {exc.code} {exc.reason}): the mirror needs a login "
                "or a proxy blocks it."
            ) from None
        raise DownloadError(f"{url} failed with HTTP {exc.code} {exc.reason}.") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"Could not connect to {url}: {_describe_url_error(exc)}.") from None
    except (TimeoutError, OSError) as exc:
        raise DownloadError(f"Could not connect to {url}: {exc}.") from None
    with response:
        kind = response.headers.get("Content-Type", "")
        if "text/html" in kind.lower():
            raise DownloadError(
                f"{url} returned a web page (HTML) instead of the file: a proxy's login page, a "
                "captive portal, or a link that points to a landing page."
            )
        if start and response.status == 206:
            mode = "ab"
        else:
            mode, start = "wb", 0  # a server that ignores Range sends the whole file
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if remaining is not None and bar.total is None:
            bar.total = start + remaining
        if expected.size is not None:
            _check_space(part.parent, expected.size - start, part.with_suffix(""), url)
        done = start
        try:
            with part.open(mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                        if isinstance(exc, http.client.IncompleteRead) and exc.partial:
                            out.write(exc.partial)
                        raise _Retry from None
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(done)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(
                    f"The disk is full: could not write {part} after {done / 1e6:.0f} MB. Free "
                    "some space (or set AVATARCAM_HOME to a folder on another disk) and run "
                    f"again; the download resumes.\n{_manual(url, part.with_suffix(''))}"
                ) from None
            raise DownloadError(f"Could not write {part}: {exc.strerror}.") from None
        if remaining is not None and done - start < remaining:
            raise _Retry


def digests(path: Path) -> tuple[str, str]:
    """The sha256 and md5 of ``path`` (hex)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _verify(part: Path, expected: Expected, url: str) -> str | None:
    """None when ``part`` is the expected file, else why not (``part`` is then deleted)."""
    size = part.stat().st_size
    problem = None
    if expected.size is not None and size != expected.size:
        problem = f"it has {size:,} bytes, expected {expected.size:,}"
    else:
        sha256, md5 = digests(part)
        if expected.sha256 and sha256 != expected.sha256.lower():
            problem = f"its sha256 is {sha256}, expected {expected.sha256}"
        elif expected.md5 and md5 != expected.md5.lower():
            problem = f"its md5 is {md5}, expected {expected.md5}"
    if problem is None:
        return None
    with open(part, "rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html")):
        problem += " (it is a web page, not the file)"
    part.unlink()
    return f"The file from {url} does not match ({problem}); it was deleted."


def download(
    urls: Sequence[str],
    dest: Path,
    expected: Expected,
    *,
    label: str | None = None,
    stream: TextIO | None = None,
) -> Path:
    """Download the first of ``urls`` that works into ``dest``, verified; returns ``dest``.

    Raises :class:`DownloadError` naming each URL tried and why it failed, with the manual
    steps. A partial download stays in ``dest.part`` (and resumes) unless it failed its
    checksum.
    """
    if not urls:
        raise ValueError("download() needs at least one URL")
    stream = stream or sys.stderr
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"Cannot create the download folder {dest.parent} ({exc.strerror}). Set "
            "AVATARCAM_HOME to a writable folder."
        ) from None
    if not os.access(dest.parent, os.W_OK):
        raise DownloadError(
            f"The download folder {dest.parent} is not writable. Set AVATARCAM_HOME to a "
            "writable folder."
        )
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        bar = ProgressBar(label or dest.name, expected.size, stream)
        try:
            if expected.size is not None:
                have = part.stat().st_size if part.exists() else 0
                _check_space(dest.parent, max(expected.size - have, 0), dest, url)
            for attempt in range(RETRIES + 1):
                try:
                    _fetch(url, part, expected, bar)
                    break
                except _Retry:
                    if attempt == RETRIES:
                        raise DownloadError(
                            f"The connection to {url} kept dropping ({RETRIES} retries)."
                        ) from None
                    bar.clear()
                    have = part.stat().st_size if part.exists() else 0
                    stream.write(f"connection lost at {have / 1e6:.1f} MB: resuming\n")
                    time.sleep(min(0.2 * 2**attempt, 5.0))
            bar.clear()
            problem = _verify(part, expected, url)
        except DownloadError as exc:
            bar.clear()
            if "disk is full" in str(exc) or "disk space" in str(exc):
                raise
            failures.append(str(exc))
            continue
        if problem is None:
            os.replace(part, dest)
            return dest
        stream.write(problem + "\n")
        failures.append(problem)
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"Could not download {dest.name}:\n  {tried}\n{_manual(urls[0], dest)}"
        + (f" A partial file is kept in {part}; running again resumes it." if part.exists() else "")
    )
