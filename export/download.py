"""Downloading a file over HTTP(S), resumable and verified, with messages a user can act on.

The file is written to ``NAME.part`` beside its destination, resumed with an HTTP ``Range``
request after an interruption (a dropped connection is retried at once, a new run continues
where the last one stopped), checked against its size and sha256 (or md5) and only then renamed
into place. A file that does not match is deleted. Only the standard library is used.

Network drops (a reset connection, a TLS connection closed without notice, a truncated body)
are retried and resumed; a resumed part must come back with the ``Content-Range`` asked for,
and ``If-Range`` (the ETag or Last-Modified of the first answer, kept in ``NAME.part.json``)
makes a server whose file changed send it whole. Writes stop at the expected size. One run at
a time downloads a given file (:mod:`export.part_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import UserError
from .part_lock import DownloadBusy, part_lock
from .progress import ProgressBar

CHUNK = 1 << 20  # bytes read per call
RETRIES = 5  # reconnections after a dropped connection, per URL
TIMEOUT_S = 30.0  # socket timeout per read
USER_AGENT = "avatarcam-download/1"


class DownloadError(UserError):
    """A download that failed: no network, not found, a web page instead of the file, a full
    disk, or a file that does not match its checksum."""


class _Retry(Exception):
    """The connection dropped: reconnect and resume. ``args[0]``: what happened."""


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class Expected:
    """What the downloaded file must be."""

    size: int | None  # exact size in bytes, None when unknown
    sha256: str | None  # hex digest
    md5: str | None = None  # hex digest, for publishers that give only md5


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


def _open(url: str, start: int, validator: str | None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _dropped(exc: BaseException) -> str | None:
    """What happened when ``exc`` is a dropped connection (worth a retry), else None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return None
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the TLS connection was closed abruptly"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS connection failed ({exc.reason or exc})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "the connection was reset"
    if isinstance(exc, (http.client.IncompleteRead, http.client.HTTPException)):
        return "the answer was cut short"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "the connection stalled"
    if isinstance(exc, OSError):
        return f"the connection failed ({exc.strerror or exc})"
    return None


def _validators(part: Path) -> dict[str, str]:
    """The If-Range validator per URL of the bytes in ``part`` (ETag or Last-Modified)."""
    try:
        data = json.loads(part.with_name(part.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_validator(part: Path, url: str, response: http.client.HTTPResponse) -> None:
    etag = response.headers.get("ETag")
    value = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    side = part.with_name(part.name + ".json")
    with contextlib.suppress(OSError):
        if value:
            side.write_text(json.dumps({url: value}), encoding="utf-8")
        else:
            side.unlink(missing_ok=True)


def _drop_part(part: Path) -> None:
    """Delete ``part`` and what is kept about it."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


def _check_range(url: str, response: http.client.HTTPResponse, start: int, size: int | None):
    """Raise DownloadError unless a 206 holds the bytes from ``start`` of a ``size`` file."""
    found = _CONTENT_RANGE.match((response.headers.get("Content-Range") or "").strip())
    total = found and found.group(3)
    if (
        found is None
        or int(found.group(1)) != start
        or (size is not None and total != "*" and int(total) != size)
    ):
        raise DownloadError(
            f"{url} answered the request for bytes {start}- with Content-Range "
            f"{response.headers.get('Content-Range')!r}: not the part asked for, so nothing of it "
            "was kept."
        )


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
            _drop_part(part)
            start = 0
        else:
            return  # complete: verified by the caller
    try:
        response = _open(url, start, _validators(part).get(url) if start else None)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the range is past the end: start over
            _drop_part(part)
            raise _Retry("the server has no bytes past the partial file: starting over") from None
        if exc.code in (404, 410):
            raise DownloadError(f"{url} was not found (HTTP {exc.code}).") from None
        if exc.code in (401, 403, 407):
            raise DownloadError(
                f"{url} refused access (HTTP {exc.code} {exc.reason}): the mirror needs a login "
                "or a proxy blocks it."
            ) from None
        raise DownloadError(f"{url} failed with HTTP {exc.code} {exc.reason}.") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DownloadError(
                f"Could not connect to {url}: its TLS certificate could not be verified "
                f"({exc.reason.verify_message}). A proxy that intercepts HTTPS needs its "
                "certificate installed (or SSL_CERT_FILE set to it)."
            ) from None
        if isinstance(exc.reason, (ssl.SSLError, ConnectionError, BrokenPipeError)) and not (
            isinstance(exc.reason, ConnectionRefusedError)
        ):
            raise _Retry(_dropped(exc.reason)) from None
        raise DownloadError(f"Could not connect to {url}: {_describe_url_error(exc)}.") from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Retry(_dropped(exc) or str(exc)) from None
    with response:
        kind = response.headers.get("Content-Type", "")
        if "text/html" in kind.lower():
            raise DownloadError(
                f"{url} returned a web page (HTML) instead of the file: a proxy's login page, a "
                "captive portal, or a link that points to a landing page."
            )
        if start and response.status == 206:
            _check_range(url, response, start, expected.size)
            mode = "ab"
        else:
            mode, start = "wb", 0  # a server that ignores Range (or If-Range) sends it whole
            _save_validator(part, url, response)
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if remaining is not None and bar.total is None:
            bar.total = start + remaining
        limit = expected.size
        if limit is not None and remaining is not None and start + remaining > limit:
            raise DownloadError(
                f"{url} sends {start + remaining:,} bytes, more than the expected {limit:,}: not "
                "the file (nothing of it was kept)."
            )
        if limit is not None:
            _check_space(part.parent, limit - start, part.with_suffix(""), url)
        done, oversize = start, False
        with _writing(part, mode, url, lambda: done) as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    if isinstance(exc, http.client.IncompleteRead) and exc.partial:
                        out.write(exc.partial[: None if limit is None else limit - done])
                    raise _Retry(_dropped(exc) or str(exc)) from None
                if not chunk:
                    break
                if limit is not None and done + len(chunk) > limit:
                    oversize = True  # not the file: its bytes are not kept (below)
                    break
                out.write(chunk)
                done += len(chunk)
                bar.update(done)
        if oversize:
            _drop_part(part)
            raise DownloadError(
                f"{url} sent more than the expected {limit:,} bytes: not the file (nothing of "
                "it was kept)."
            )
        if remaining is not None and done - start < remaining:
            raise _Retry("the answer was cut short")


@contextlib.contextmanager
def _writing(part: Path, mode: str, url: str, done: Callable[[], int]) -> Iterator[BinaryIO]:
    """``part`` open for writing; a failed write (not a failed read) is a disk problem."""
    try:
        out = part.open(mode)
    except OSError as exc:
        raise DownloadError(f"Could not write {part}: {exc.strerror}.") from None
    try:
        yield _DiskErrors(out, part, url, done)
    finally:
        with contextlib.suppress(OSError):
            out.close()


class _DiskErrors:
    """A file whose write errors become DownloadErrors that name the disk."""

    def __init__(self, out: BinaryIO, part: Path, url: str, done: Callable[[], int]):
        self._out, self._part, self._url, self._done = out, part, url, done

    def write(self, data: bytes) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(
                    f"The disk is full: could not write {self._part} after "
                    f"{self._done() / 1e6:.0f} MB. Free some space (or set AVATARCAM_HOME to a "
                    "folder on another disk) and run again; the download resumes.\n"
                    f"{_manual(self._url, self._part.with_suffix(''))}"
                ) from None
            raise DownloadError(f"Could not write {self._part}: {exc.strerror}.") from None


def digests(path: Path) -> tuple[str, str]:
    """The sha256 and md5 of ``path`` (hex)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _verify(part: Path, expected: Expected, url: str, delete: bool = True) -> str | None:
    """None when ``part`` is the expected file, else why not (``part`` is then deleted, unless
    ``delete`` is False)."""
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
    if not delete:
        return problem
    with open(part, "rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html")):
        problem += " (it is a web page, not the file)"
    _drop_part(part)
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
    try:
        with part_lock(part, stream):
            if dest.is_file() and _verify(dest, expected, str(dest), delete=False) is None:
                return dest  # another run has just downloaded it
            return _download_locked(urls, dest, part, expected, label, stream)
    except DownloadBusy as exc:
        raise DownloadError(str(exc)) from None


def _download_locked(
    urls: Sequence[str],
    dest: Path,
    part: Path,
    expected: Expected,
    label: str | None,
    stream: TextIO,
) -> Path:
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
                except _Retry as exc:
                    if attempt == RETRIES:
                        raise DownloadError(
                            f"The connection to {url} kept dropping ({RETRIES} retries; last: "
                            f"{exc.args[0] if exc.args else 'cut short'})."
                        ) from None
                    bar.clear()
                    have = part.stat().st_size if part.exists() else 0
                    what = exc.args[0] if exc.args else "the connection dropped"
                    stream.write(f"connection lost at {have / 1e6:.1f} MB ({what}): resuming\n")
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
            _drop_part(part)  # what is kept about it
            return dest
        stream.write(problem + "\n")
        failures.append(problem)
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"Could not download {dest.name}:\n  {tried}\n{_manual(urls[0], dest)}"
        + (f" A partial file is kept in {part}; running again resumes it." if part.exists() else "")
    )
