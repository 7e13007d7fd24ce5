"""How much of the CPU a measurement actually got, from ``/proc/stat`` and ``getrusage``.

The load average says how many threads wanted to run, not who ran: on a shared machine a row
can look slow because another program had the cores. Around every timed call (and around a
whole row) this module reads the machine's busy CPU time (``/proc/stat``, all cores) and this
process's own CPU time (``getrusage``, all its threads; ``RUSAGE_CHILDREN`` for a command run
as a child), and derives:

- ``own_cores``: CPU seconds this process (or child) got per wall-clock second,
- ``others_cores``: CPU seconds everything else on the machine got per wall-clock second,
- ``share``: own / (own + others), the share of the busy CPU time that was ours.

A timed call during which other processes used more than :data:`CONTENDED_CORES` cores on
average is *contended*; rows count such samples, report percentiles of the clean ones, and the
runner repeats a row once when most of its samples were contended. Where ``/proc/stat`` does
not exist (macOS, Windows) only the process's own time is known and nothing is marked.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Other processes using more than this many cores during a call make it contended.
CONTENDED_CORES = 0.5

_PROC_STAT = Path("/proc/stat")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy since boot (None without ``/proc/stat``)."""
    try:
        with _PROC_STAT.open(encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK


def own_cpu_s(children: bool = False) -> float:
    """CPU seconds (user + system, all threads) of this process, or of its waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Snapshot:
    """One reading of the clocks."""

    wall: float  # time.perf_counter()
    own: float  # own CPU seconds
    busy: float | None  # machine busy CPU seconds (None: unknown here)


def snapshot(children: bool = False) -> Snapshot:
    return Snapshot(time.perf_counter(), own_cpu_s(children), machine_busy_s())


def between(start: Snapshot, end: Snapshot) -> dict[str, float | None]:
    """own_cores, others_cores and share between two snapshots."""
    wall = end.wall - start.wall
    if wall <= 0:
        return {"own_cores": None, "others_cores": None, "share": None}
    own = max(0.0, end.own - start.own)
    if start.busy is None or end.busy is None:
        return {"own_cores": round(own / wall, 3), "others_cores": None, "share": None}
    others = max(0.0, (end.busy - start.busy) - own)
    total = own + others
    return {
        "own_cores": round(own / wall, 3),
        "others_cores": round(others / wall, 3),
        "share": round(own / total, 3) if total > 0 else None,
    }


def is_contended(reading: dict[str, float | None]) -> bool:
    others = reading.get("others_cores")
    return others is not None and others > CONTENDED_CORES


class CallMeter:
    """Wraps a per-call function and records the CPU readings of every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float | None]] = []  # one reading per call, in order
        self._row_start = snapshot()

    def wrap(self, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def measured(inputs: Any) -> Any:
            start = snapshot()
            result = step(inputs)
            self.calls.append(between(start, snapshot()))
            return result

        return measured

    def summary(self, timed: int) -> dict[str, Any]:
        """The whole row's share plus the contended flags of the last ``timed`` calls."""
        readings = self.calls[-timed:] if timed else []
        flags = [is_contended(r) for r in readings]
        return {
            **{f"row_{k}": v for k, v in between(self._row_start, snapshot()).items()},
            "contended_cores_threshold": CONTENDED_CORES,
            "samples_contended": sum(flags),
            "sample_flags": flags,
        }
