"""Which catalog entry a checkpoint file on disk is: trusted only when its size and its hash
match the entry.

The hash of a 751 MB file takes a few seconds, so it is computed once: the digests are kept
beside the file in ``NAME.verified`` (with the size and modification time they belong to) and
computed again only when the file changes.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from .catalog import CatalogEntry
from .download import digests

RECORD_SUFFIX = ".verified"  # NAME.verified: the digests of NAME, computed once


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _recorded(path: Path) -> dict[str, str] | None:
    """The digests recorded for ``path`` as it is now, or None."""
    try:
        data = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or [data.get("size"), data.get("mtime_ns")] != list(_stamp(path)):
        return None
    return {key: str(data[key]) for key in ("sha256", "md5") if data.get(key)}


def remember(path: Path, sha256: str | None, md5: str | None) -> None:
    """Record digests of ``path`` that were just verified (a read-only folder records none)."""
    size, mtime_ns = _stamp(path)
    record = {"size": size, "mtime_ns": mtime_ns, "sha256": sha256, "md5": md5}
    with contextlib.suppress(OSError):
        _record_path(path).write_text(json.dumps(record), encoding="utf-8")


def _digests_of(path: Path) -> dict[str, str]:
    known = _recorded(path)
    if known is None:
        sha256, md5 = digests(path)
        remember(path, sha256, md5)
        known = {"sha256": sha256, "md5": md5}
    return known


def sha256_of(path: Path) -> str:
    """The sha256 of ``path``, computed once while the file stays the same."""
    known = _digests_of(path)
    if "sha256" not in known:  # recorded for an md5-only entry
        sha256, md5 = digests(path)
        remember(path, sha256, md5)
        return sha256
    return known["sha256"]


def _hash_matches(known: dict[str, str], entry: CatalogEntry) -> bool:
    if entry.sha256 and "sha256" in known:
        return known["sha256"] == entry.sha256
    return bool(entry.md5) and known.get("md5") == entry.md5


def is_entry(path: Path, entry: CatalogEntry) -> bool:
    """True when ``path`` is ``entry``'s file: the size first, then the hash (computed once)."""
    if entry.size is not None and path.stat().st_size != entry.size:
        return False
    return _hash_matches(_digests_of(path), entry)


def identify(path: Path, catalog: tuple[CatalogEntry, ...]) -> CatalogEntry | None:
    """The entry whose file ``path`` is (by size and hash, whatever its name), or None."""
    size = path.stat().st_size
    candidates = [e for e in catalog if e.size is None or e.size == size]
    if not candidates:
        return None
    known = _digests_of(path)
    return next((e for e in candidates if _hash_matches(known, e)), None)


def forget(path: Path) -> None:
    """Remove the record of ``path`` (when the file is replaced)."""
    _record_path(path).unlink(missing_ok=True)
