"""The registry of a server's replicas: what each reported last (sessions, frames, batch
sizes; summed for ``/health``) and the connections of every client address over all replicas
(the per-client cap and reconnection rate). One Serve deployment, no model."""

import time
from typing import Any

from ray import serve

from .admission import ArrivalBudget, too_many
from .loopback import bind_replica_to_loopback
from .protocol import ErrorCode

#: A replica's report older than this is from a replica that died; the registry drops it.
STALE_AFTER_S = 5.0


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Registry:
    """Collects each replica's latest report (sessions, frames, batch sizes)."""

    def __init__(self, loopback: bool = False) -> None:
        if loopback:
            bind_replica_to_loopback()
        self._reports: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, dict[str, str]] = {}  # replica -> connection -> client host
        self._budget: ArrivalBudget | None = None  # new connections per host

    def report(self, replica: str, snapshot: dict[str, Any]) -> None:
        self._reports[replica] = {**snapshot, "reported": time.time()}

    def remove(self, replica: str) -> None:
        self._reports.pop(replica, None)
        self._clients.pop(replica, None)

    def open(self, replica: str, connection: str, host: str, limit: int) -> tuple[str, str] | None:
        """Count a new connection from ``host``: None when admitted, else (error code, why).

        The limits of :mod:`engines.serve.admission` over all replicas (each proxy applies them
        to its own connections first): at most ``limit`` open connections per host, and new
        ones at most 2 x ``limit`` in a row, then ``limit`` per CONNECT_REFILL_S, none for
        STRIKE_PENALTY_S after a connection of ``host`` broke the protocol.
        """
        now = time.time()
        stale = [n for n, r in self._reports.items() if now - r["reported"] >= STALE_AFTER_S]
        for name in stale:
            self.remove(name)  # connections of a replica that died are gone
        have = sum(list(c.values()).count(host) for c in self._clients.values())
        if have >= limit:
            return ErrorCode.FULL.value, too_many(host, have, limit)
        budget = self._arrivals(limit)
        wait = budget.take(host, now)
        if wait > 0:
            return ErrorCode.RATE.value, budget.refusal(host, wait)
        self._clients.setdefault(replica, {})[connection] = host
        return None

    def close(self, replica: str, connection: str, broke: str | None = None) -> None:
        """A connection ended; ``broke``: the protocol violation it ended with, which costs its
        host STRIKE_PENALTY_S on every proxy of the cluster."""
        host = self._clients.get(replica, {}).pop(connection, None)
        if broke is not None and host is not None and self._budget is not None:
            self._budget.strike(host, time.time(), broke)

    def _arrivals(self, limit: int) -> ArrivalBudget:
        if self._budget is None or self._budget.limit != limit:
            self._budget = ArrivalBudget(limit)
        return self._budget

    def summary(self) -> dict[str, Any]:
        now = time.time()
        live = {
            name: report
            for name, report in self._reports.items()
            if now - report["reported"] < STALE_AFTER_S
        }
        batches: dict[str, int] = {}
        for report in live.values():
            for size, count in report["batches"].items():
                batches[size] = batches.get(size, 0) + count
        return {
            "sessions": sum(r["sessions"] for r in live.values()),
            "sessions_total": sum(r["sessions_total"] for r in live.values()),
            "frames": sum(r["frames"] for r in live.values()),
            "batch_sizes": dict(sorted(batches.items(), key=lambda kv: int(kv[0]))),
            "replicas": live,
        }
