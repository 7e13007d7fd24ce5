"""Measure once, cache the verdict: the one helper behind ``--backend auto``'s measurements
(which CPU backend is faster, :mod:`engines.race`; whether torch.compile pays,
:mod:`engines.compile_choice`).

A measurement is a callable returning a JSON-able dict. Its result is kept in the engine cache
under a key that names everything it depends on (model, shapes, machine, library versions), so
later starts read it instead of measuring again; ``remeasure`` drops the kept result first (the
user's ``--remeasure``); a result that ``keep`` refuses (e.g. one where a backend failed, which
would otherwise rank it last for ever) is used for this run only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT = "verdict.json"


@dataclass(frozen=True)
class Verdict:
    result: dict[str, Any]  # what the measurement returned
    cached: bool  # read from the cache, not measured by this call


class _NotKept(Exception):
    def __init__(self, result: dict[str, Any]):
        super().__init__("measurement not kept")
        self.result = result


def measured_once(
    cache: Any,
    kind: str,
    label: str,
    key: Mapping[str, Any],
    measure: Callable[[], dict[str, Any]],
    what: str,
    remeasure: bool = False,
    keep: Callable[[dict[str, Any]], bool] = lambda result: True,
    file: str = RESULT,
) -> Verdict:
    """The kept result of ``measure()`` for ``key`` (kind/label name its cache entry, ``file``
    the JSON file in it), measured on a miss or when ``remeasure``. Without a cache (None),
    measures every time."""
    if cache is None:
        return Verdict(measure(), False)
    if remeasure:
        cache.remove(kind, label, key, what)
    fresh: dict[str, dict[str, Any]] = {}

    def build(folder: Path) -> None:
        result = measure()
        if not keep(result):
            raise _NotKept(result)
        fresh["result"] = result
        (folder / file).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    try:
        entry = cache.get_or_build(kind, label, key, [file], build, what)
    except _NotKept as exc:
        return Verdict(exc.result, False)
    if "result" in fresh:
        return Verdict(fresh["result"], False)
    return Verdict(json.loads(entry.file(file).read_text(encoding="utf-8")), True)
