"""Failures remembered per machine and library versions, so that what always fails here (a
provider that does not load, a build that does not finish) is not retried for minutes on every
start, and is tried again once anything it depends on changes or the user asks.

One JSON file in the engine cache: per identity (machine and versions, digested) the failed
things by name, each with its error and when it happened. Written atomically; a damaged file
counts as empty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE = "failures.json"


class FailureMemory:
    """Failures of ``identity`` (a JSON-able mapping: machine, GPU, library versions) kept in
    ``path``."""

    def __init__(self, path: str | Path, identity: Mapping[str, Any]):
        from .cache import key_digest

        self.path = Path(path)
        self.identity = dict(identity)
        self._key = key_digest(self.identity)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        from .cache import atomic_write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, data)

    def recall(self, what: str) -> str | None:
        """The remembered error of ``what`` on this identity, or None."""
        entry = self._read().get(self._key, {}).get("failures", {}).get(what)
        if not isinstance(entry, dict):
            return None
        return f"{entry.get('error', '?')} (remembered from {entry.get('when', '?')})"

    def remember(self, what: str, error: str) -> None:
        data = self._read()
        mine = data.setdefault(self._key, {"identity": self.identity, "failures": {}})
        mine["failures"][what] = {"error": error, "when": time.strftime("%Y-%m-%d %H:%M")}
        self._write(data)

    def forget(self, what: str | None = None) -> None:
        """Forget ``what`` (None: every failure of this identity), e.g. when the user asks for
        a new try."""
        data = self._read()
        if self._key not in data:
            return
        if what is None:
            del data[self._key]
        else:
            data[self._key]["failures"].pop(what, None)
        self._write(data)
