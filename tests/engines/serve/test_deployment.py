"""The replica's own rules without starting Ray: which sessions count as active for a batch,
when the health check fails (so that Ray replaces the replica), and the registry's limits per
client address."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install -e '.[serve]'")

from engines.serve import deployment
from engines.serve.admission import CONNECT_REFILL_S, STRIKE_PENALTY_S
from engines.serve.batcher import FrameBatcher

Replica = deployment.AvatarServer.func_or_class  # the class behind the Serve deployment


def _replica(**sessions_last_frame: float) -> SimpleNamespace:
    sessions = {name: SimpleNamespace(last_frame=t) for name, t in sessions_last_frame.items()}
    batcher = FrameBatcher(lambda jobs: jobs, max_batch=4, wait_s=0.0, timeout_s=1.0)
    return SimpleNamespace(sessions=sessions, batcher=batcher, replica="r")


def test_only_sessions_with_a_recent_frame_are_active() -> None:
    now = time.monotonic()
    replica = _replica(
        streaming=now - 0.1,
        paused=now - deployment.ACTIVE_WINDOW_S - 1,
        handshake_only=float("-inf"),
    )
    assert Replica._active(replica) == 1


def test_the_health_check_fails_after_repeated_engine_errors_or_a_stuck_call() -> None:
    replica = _replica()
    Replica.check_health(replica)  # healthy
    replica.batcher.errors = deployment.UNHEALTHY_AFTER_ERRORS - 1
    Replica.check_health(replica)
    replica.batcher.errors = deployment.UNHEALTHY_AFTER_ERRORS
    with pytest.raises(RuntimeError, match="engine calls failed in a row"):
        Replica.check_health(replica)
    replica.batcher.errors = 0
    replica.batcher._stuck_since = time.monotonic() - 5
    with pytest.raises(RuntimeError, match="limit 1 s"):
        Replica.check_health(replica)


def test_gpus_per_replica_come_from_the_flag_or_the_cluster(monkeypatch) -> None:
    import ray

    from engines.serve.settings import ServerSettings

    def settings(**fields) -> ServerSettings:
        return ServerSettings(checkpoint=Path("x"), replicas=4, **fields)

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    assert deployment.gpus_per_replica(settings()) == 0.5  # a CPU-only head, GPU workers
    assert deployment.gpus_per_replica(settings(gpus_per_replica=1.0)) == 1.0
    assert deployment.gpus_per_replica(settings(device="cpu")) == 0.0
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    assert deployment.gpus_per_replica(settings()) == 0.0


def test_the_registry_caps_connections_and_reconnections_per_client_address(monkeypatch) -> None:
    from engines.serve import registry as registry_module

    clock = [1000.0]
    monkeypatch.setattr(registry_module.time, "time", lambda: clock[0])
    registry = registry_module.Registry.func_or_class()
    registry.report("r", {})
    limit = 2
    assert registry.open("r", "a", "10.0.0.1", limit) is None
    assert registry.open("r", "b", "10.0.0.1", limit) is None
    code, message = registry.open("r", "c", "10.0.0.1", limit)  # two open already
    assert code == "full" and "--max-sessions-per-client" in message
    assert registry.open("r", "x", "10.0.0.2", limit) is None  # another address
    # Reconnecting in a loop: 2 x limit in a row, then limit per CONNECT_REFILL_S.
    for name in ("a", "b"):
        registry.close("r", name)
    assert registry.open("r", "d", "10.0.0.1", limit) is None
    registry.close("r", "d")
    assert registry.open("r", "e", "10.0.0.1", limit) is None
    registry.close("r", "e")
    code, message = registry.open("r", "f", "10.0.0.1", limit)
    assert code == "rate_limited" and "wait a few seconds" in message
    clock[0] += CONNECT_REFILL_S / limit
    registry.report("r", {})
    assert registry.open("r", "g", "10.0.0.1", limit) is None


def test_the_registry_keeps_an_address_that_broke_the_protocol_out_on_every_proxy(
    monkeypatch,
) -> None:
    from engines.serve import registry as registry_module

    clock = [1000.0]
    monkeypatch.setattr(registry_module.time, "time", lambda: clock[0])
    registry = registry_module.Registry.func_or_class()
    registry.report("r", {})
    assert registry.open("r", "a", "10.0.0.1", 4) is None
    assert registry.open("r", "b", "10.0.0.2", 4) is None
    registry.close("r", "a", "out_of_order")  # a flood, seen by the replica
    registry.close("r", "b", None)  # a clean end
    code, message = registry.open("r", "c", "10.0.0.1", 4)
    assert code == "rate_limited" and "broke the protocol (out_of_order)" in message
    assert f"for {STRIKE_PENALTY_S:g} s" in message
    assert registry.open("r", "d", "10.0.0.2", 4) is None  # only the offender waits
    clock[0] += STRIKE_PENALTY_S + 0.1
    registry.report("r", {})
    assert registry.open("r", "e", "10.0.0.1", 4) is None
