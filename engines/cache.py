"""The engine cache, the artifact store: built artifacts (ONNX files, optimized ONNX Runtime
models, TensorRT engines and timing caches, measurements) kept between runs, so a second start
takes seconds. Machine identity is :mod:`engines.identity`; the ONNX export recipe is
:mod:`engines.onnx_recipe`.

Layout under the cache root (``EngineOptions.cache_dir``, else ``$AVATARCAM_HOME/cache``, else
``$XDG_CACHE_HOME/avatarcam/cache`` = ``~/.cache/avatarcam/cache``)::

    checkpoint-hashes.json        sha256 of checkpoint files, keyed by path + size + mtime
    <kind>/<label>-<key digest>/  one entry: its files and manifest.json
    <kind>/<label>-<key digest>.lock
    tensorrt/timing-*.cache       TensorRT timing caches, shared by builds on one GPU

An entry's key holds everything that invalidates it (checkpoint content hash, config, shapes,
precision, versions of the exporter and runtimes, GPU); its folder name is a digest of the key,
so a changed input selects a different entry. ``manifest.json`` records the key and the size
and sha256 of every file; an entry whose manifest or files do not match (partial write,
truncation, stale key) is rebuilt with a :class:`CacheWarning`, never an error. Entries are
built in a temporary folder and renamed into place, under a per-entry lock file, so a crash or
a second process never leaves a half-written entry behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.files import atomic_write_bytes

from .errors import EngineError
from .identity import cpu_name, package_version

__all__ = [
    "ArtifactCache",
    "CacheDirError",
    "CacheEntry",
    "CacheWarning",
    "FileLock",
    "cpu_name",  # re-exported from engines.identity
    "default_cache_dir",
    "key_digest",
    "package_version",  # re-exported from engines.identity
]

CACHE_FORMAT = 1  # layout version of entries and manifests
MANIFEST = "manifest.json"
HASHES = "checkpoint-hashes.json"
LOCK_TIMEOUT_S = 3600.0  # a TensorRT build of the vox model takes minutes, not an hour
_CHUNK = 8 << 20


class CacheDirError(EngineError):
    """The cache folder cannot be created or written (permissions, read-only disk)."""


def unwritable_cache(root: Path, exc: OSError) -> CacheDirError:
    """The error for a cache folder ``root`` that failed with ``exc``."""
    reason = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
    return CacheDirError(
        f"The engine cache folder {root} cannot be written: {reason}{where}.\n"
        "Fix its permissions, or point avatarcam at a writable folder with the environment "
        "variable AVATARCAM_HOME (the cache is then $AVATARCAM_HOME/cache), e.g.\n"
        "  AVATARCAM_HOME=~/avatarcam python run_live.py ..."
    )


@contextlib.contextmanager
def cache_writes(root: Path) -> Iterator[None]:
    """Turn a permission or read-only error under ``root`` into :class:`CacheDirError`."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, (PermissionError, FileExistsError, NotADirectoryError)) or (
            exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        ):
            raise unwritable_cache(root, exc) from None
        raise


FAILED = ".failed.json"  # beside an entry: the error of its last failed build


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, partial or stale) and is being rebuilt."""


def default_cache_dir() -> Path:
    """``$AVATARCAM_HOME/cache``, else ``$XDG_CACHE_HOME/avatarcam/cache`` (``~/.cache``)."""
    home = os.environ.get("AVATARCAM_HOME")
    if home:
        return Path(home).expanduser() / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "avatarcam" / "cache"


def file_sha256(path: Path) -> str:
    """sha256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def key_digest(key: Mapping[str, Any]) -> str:
    """A stable digest of a JSON-able key (sorted keys)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _normalized(key: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


class FileLock:
    """An exclusive lock on ``path`` across processes (flock on POSIX, msvcrt on Windows).

    The operating system drops the lock when its holder dies, so a crashed build never blocks
    the next start. Waiting longer than ``timeout`` raises EngineError.
    """

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT_S, what: str = "the cache"):
        self.path = path  # the lock file (created if missing, never deleted)
        self.timeout = timeout  # seconds to wait before giving up
        self.what = what  # what is being built, for the waiting message
        self._file: Any = None

    def _try_lock(self) -> bool:
        if sys.platform == "win32":
            import msvcrt

            try:
                msvcrt.locking(self._file.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True
        import fcntl

        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _unlock(self) -> None:
        if sys.platform == "win32":
            import msvcrt

            self._file.seek(0)
            msvcrt.locking(self._file.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a+b")
        start = time.monotonic()
        told = False
        while not self._try_lock():
            waited = time.monotonic() - start
            if waited > self.timeout:
                self._file.close()
                self._file = None
                raise EngineError(
                    f"waited {waited:.0f} s for another avatarcam process to finish {self.what} "
                    f"(lock file {self.path}). If no other avatarcam is running, delete that "
                    "file and start again."
                )
            if not told:
                print(
                    f"avatarcam: waiting for another process to finish {self.what} ...",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._unlock()
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class CacheEntry:
    """A valid entry: its folder and the digest of its key."""

    path: Path  # the entry's folder
    digest: str  # digest of the key (also the folder name's suffix)

    def file(self, name: str) -> Path:
        return self.path / name


class ArtifactCache:
    """Built artifacts under ``root`` (see the module doc)."""

    def __init__(self, root: str | Path | None = None, retry_failed: bool = False):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.builds = 0  # entries built (not reused) by this object, for logs and tests
        self.retry_failed = retry_failed  # build again what failed before (--remeasure)

    # --- checkpoints ---------------------------------------------------------------------------

    def checkpoint_digest(self, checkpoint: str | Path) -> str:
        """sha256 of the checkpoint's contents; remembered by path, size and mtime so an
        unchanged file is hashed once, not at every start."""
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            from export.checkpoint import read_checkpoint

            read_checkpoint(path)  # raises the user-facing CheckpointError
        path = path.resolve()
        stat = path.stat()
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        table_path = self.root / HASHES
        table = self._read_json(table_path)
        known = table.get(str(path)) if isinstance(table, dict) else None
        if isinstance(known, dict) and all(known.get(k) == v for k, v in record.items()):
            sha = known.get("sha256")
            if isinstance(sha, str) and len(sha) == 64:
                return sha
        sha = file_sha256(path)
        with (
            cache_writes(self.root),
            FileLock(self.root / (HASHES + ".lock"), what="hashing a checkpoint"),
        ):
            table = self._read_json(table_path)
            if not isinstance(table, dict):
                table = {}
            table[str(path)] = {**record, "sha256": sha}
            atomic_write_json(table_path, table)
        return sha

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # --- entries -------------------------------------------------------------------------------

    def entry_path(self, kind: str, label: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / f"{_safe(label)}-{key_digest(key)}"

    def _problem(self, folder: Path, key: Mapping[str, Any], files: Sequence[str]) -> str | None:
        """Why ``folder`` is not a valid entry for ``key`` with ``files``; None if it is."""
        manifest_path = folder / MANIFEST
        if not folder.exists():
            return "missing"
        manifest = self._read_json(manifest_path)
        if not isinstance(manifest, dict):
            return f"has no readable {MANIFEST} (a partial write?)"
        if manifest.get("format") != CACHE_FORMAT:
            return f"was written by another cache format ({manifest.get('format')})"
        if manifest.get("key") != _normalized(key):
            return "is stale (its key does not match)"
        recorded = manifest.get("files")
        if not isinstance(recorded, dict):
            return f"has a {MANIFEST} without files"
        for name in files:
            info = recorded.get(name)
            path = folder / name
            if not isinstance(info, dict) or not path.is_file():
                return f"lacks {name}"
            size = path.stat().st_size
            if size != info.get("size"):
                return f"has a damaged {name} ({size} bytes, expected {info.get('size')})"
            if file_sha256(path) != info.get("sha256"):
                return f"has a damaged {name} (sha256 mismatch)"
        return None

    def get_or_build(
        self,
        kind: str,
        label: str,
        key: Mapping[str, Any],
        files: Sequence[str],
        build: Callable[[Path], None],
        what: str,
        remember_failure: bool = False,
    ) -> CacheEntry:
        """The entry for ``key``, built by ``build(folder)`` (which writes ``files`` into
        ``folder``) when it is missing or unusable. ``what`` names it in messages.

        ``remember_failure``: a build that raises is remembered with its error (beside the
        entry, so under the same key: until the versions in the key change) and not tried
        again; the remembered error is raised instead, unless ``retry_failed``.
        """
        folder = self.entry_path(kind, label, key)
        digest = key_digest(key)
        failed = folder.with_name(folder.name + FAILED)
        with (
            cache_writes(self.root),
            FileLock(folder.with_name(folder.name + ".lock"), what=what),
        ):
            problem = self._problem(folder, key, files)
            if problem is None:
                return CacheEntry(folder, digest)
            if remember_failure and not self.retry_failed:
                before = self._read_json(failed)
                if isinstance(before, dict):
                    raise EngineError(
                        f"building the {what} failed on this machine before "
                        f"({before.get('when', '?')}): {before.get('error', '?')}. It is not "
                        "tried again until a version in its key changes; to try now: "
                        f"--remeasure (or delete {failed})"
                    )
            if problem != "missing":
                warnings.warn(
                    f"the cached {what} in {folder} {problem}; rebuilding it",
                    CacheWarning,
                    stacklevel=2,
                )
            try:
                self._build(folder, key, files, build, what)
            except Exception as exc:
                if remember_failure and not getattr(exc, "transient", False):
                    text = str(exc).strip()
                    error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
                    when = time.strftime("%Y-%m-%d %H:%M")
                    atomic_write_json(failed, {"error": error, "when": when})
                raise
            failed.unlink(missing_ok=True)
            return CacheEntry(folder, digest)

    def _build(
        self,
        folder: Path,
        key: Mapping[str, Any],
        files: Sequence[str],
        build: Callable[[Path], None],
        what: str,
    ) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        tmp.mkdir()
        try:
            start = time.monotonic()
            build(tmp)
            recorded = {}
            for name in files:
                path = tmp / name
                if not path.is_file():
                    raise EngineError(f"internal error: building the {what} did not write {name}")
                recorded[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
            manifest = {
                "format": CACHE_FORMAT,
                "what": what,
                "key": _normalized(key),
                "files": recorded,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - start, 2),
            }
            atomic_write_json(tmp / MANIFEST, manifest)
            self._remove(folder)
            os.replace(tmp, folder)
            self.builds += 1
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _remove(folder: Path) -> None:
        if folder.exists():
            trash = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def discard(self, entry: CacheEntry, reason: str, what: str) -> None:
        """Drop an entry that failed to load (e.g. a TensorRT engine that does not
        deserialize), with a CacheWarning; the next get_or_build rebuilds it."""
        warnings.warn(
            f"the cached {what} in {entry.path} could not be used ({reason}); rebuilding it",
            CacheWarning,
            stacklevel=2,
        )
        with FileLock(entry.path.with_name(entry.path.name + ".lock"), what=what):
            self._remove(entry.path)

    def remove(self, kind: str, label: str, key: Mapping[str, Any], what: str) -> bool:
        """Delete the entry for ``key`` (e.g. to calibrate again); True if there was one."""
        folder = self.entry_path(kind, label, key)
        with FileLock(folder.with_name(folder.name + ".lock"), what=what):
            existed = folder.exists()
            self._remove(folder)
        return existed

    @contextlib.contextmanager
    def locked_file(self, relative: str, what: str) -> Iterator[Path]:
        """Hold the lock of a shared file under the root (e.g. a TensorRT timing cache)."""
        path = self.root / relative
        with FileLock(path.with_name(path.name + ".lock"), what=what):
            yield path


def _safe(label: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in label)
    return out.strip("-.")[:80] or "entry"


def __getattr__(name: str) -> Any:
    # The ONNX recipe lives in engines.onnx_recipe (it imports this module).
    if name == "onnx_artifacts":
        from .onnx_recipe import onnx_artifacts

        return onnx_artifacts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
