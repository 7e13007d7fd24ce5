"""The registry of a server's replicas: what each reported last (sessions, frames, batch
sizes; summed for ``/health``) and the connections of every client address over all replicas
(the per-client cap and reconnection rate). One Serve deployment, no model."""

import time
from typing import Any

from ray import serve

from .loopback import bind_replica_to_loopback
from .protocol import ErrorCode

#: A replica's report older than this is from a replica that died; the registry drops it.
STALE_AFTER_S = 5.0
#: A client address regains one new connection per CONNECT_REFILL_S / max_sessions_per_client.
CONNECT_REFILL_S = 10.0


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Registry:
    """Collects each replica's latest report (sessions, frames, batch sizes)."""

    def __init__(self, loopback: bool = False) -> None:
        if loopback:
            bind_replica_to_loopback()
        self._reports: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, dict[str, str]] = {}  # replica -> connection -> client host
        self._arrivals: dict[str, tuple[float, float]] = {}  # host -> (allowance, when)

    def report(self, replica: str, snapshot: dict[str, Any]) -> None:
        self._reports[replica] = {**snapshot, "reported": time.time()}

    def remove(self, replica: str) -> None:
        self._reports.pop(replica, None)
        self._clients.pop(replica, None)

    def open(self, replica: str, connection: str, host: str, limit: int) -> tuple[str, str] | None:
        """Count a new connection from ``host``: None when admitted, else (error code, why).

        At most ``limit`` open connections per host, and new ones at most 2 x ``limit`` in a
        row, then ``limit`` per CONNECT_REFILL_S: a client that reconnects in a loop (each
        session may send an avatar, which runs on the engine) is slowed down.
        """
        now = time.time()
        stale = [n for n, r in self._reports.items() if now - r["reported"] >= STALE_AFTER_S]
        for name in stale:
            self.remove(name)  # connections of a replica that died are gone
        have = sum(list(c.values()).count(host) for c in self._clients.values())
        if have >= limit:
            return ErrorCode.FULL.value, (
                f"{host} already has {have} connections to this server (at most {limit} per "
                "client address): close one, or start the server with a higher "
                "--max-sessions-per-client"
            )
        burst, rate = 2.0 * limit, limit / CONNECT_REFILL_S
        if len(self._arrivals) > 4096:  # forget addresses whose allowance is full again
            self._arrivals = {
                h: (t, at) for h, (t, at) in self._arrivals.items() if t + (now - at) * rate < burst
            }
        tokens, then = self._arrivals.get(host, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        if tokens < 1:
            return ErrorCode.RATE.value, (
                f"{host} opened more than {burst:g} connections in a short time (then {limit} "
                f"per {CONNECT_REFILL_S:g} s): wait a few seconds, and keep one connection per "
                "stream open instead of reconnecting"
            )
        self._arrivals[host] = (tokens - 1, now)
        self._clients.setdefault(replica, {})[connection] = host
        return None

    def close(self, replica: str, connection: str) -> None:
        self._clients.get(replica, {}).pop(connection, None)

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
