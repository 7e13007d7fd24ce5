"""The server's configuration: one frozen dataclass that ``python -m engines.serve`` fills."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8765
STREAM_PATH = "/v1/stream"  # the WebSocket endpoint
HEALTH_PATH = "/health"  # JSON: model, sessions and batch sizes per replica


@dataclass(frozen=True)
class ServerSettings:
    """How one avatar server runs."""

    checkpoint: Path  # FOMM checkpoint the replicas load
    config: str = "vox-256"  # preset name or FOMM YAML file
    resolution: int | None = None  # frame size; None: the config's
    backend: str = "auto"  # engine backend on the replicas
    precision: str = "fp32"  # fp32 or fp16
    device: str = "auto"  # cpu, cuda, cuda:N or auto
    host: str = "127.0.0.1"  # address the HTTP/WebSocket proxy binds
    port: int = DEFAULT_PORT  # its port
    replicas: int = 1  # model replicas (each holds its sessions' state)
    max_batch: int = 4  # most frames of different sessions in one frame-graph call
    batch_wait_ms: float = 2.0  # how long a replica waits to fill a batch
    max_sessions: int = 8  # sessions per replica; more are refused
    token: str | None = None  # shared secret clients must send; None: no authentication
    address: str | None = None  # Ray cluster to join ("auto", "ray://..."); None: start one
    num_cpus: int | None = None  # CPUs of a local Ray cluster; None: all
    cache_dir: Path | None = None  # engine artifact cache on the replicas
    threads: int | None = None  # CPU threads per replica; None: the node's cores / replicas
    hello_timeout_s: float = 5.0  # a connection that sends no HELLO within this is closed
    idle_timeout_s: float = 60.0  # a session that sends nothing for this long is closed
    engine_timeout_s: float = 30.0  # longest engine call; past it the replica is unhealthy
    max_sessions_per_client: int = 4  # open connections per client IP address, all replicas
    gpus_per_replica: float | None = None  # None: the cluster's GPUs / replicas (at most 1)
    max_replicas_per_node: int | None = None  # spread replicas over nodes; None: no limit

    def batch_sizes(self) -> tuple[int, ...]:
        """Engine batch sizes a replica builds: powers of two below max_batch, and max_batch.

        A batch of n frames runs on the smallest engine that fits it, padded: at most half of a
        call is padding, with log2(max_batch) + 1 engines.
        """
        sizes = {self.max_batch}
        size = 1
        while size < self.max_batch:
            sizes.add(size)
            size *= 2
        return tuple(sorted(sizes))

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
