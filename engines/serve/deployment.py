"""The Ray Serve application: a FastAPI ingress with one WebSocket per stream, N model replicas
that batch their sessions' frames (:class:`~engines.serve.batcher.FrameBatcher`), and a
registry that sums what every replica reports for the health endpoint.

Imports Ray and FastAPI at module level: only :mod:`engines.serve.server` imports this module,
after checking that the ``serve`` extra is installed. No ``from __future__ import annotations``:
FastAPI reads the route parameters' annotations (``WebSocket``) at run time, in the replica.
"""

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, WebSocket
from ray import serve
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .batcher import FrameBatcher
from .protocol import PROTOCOL_VERSION, ErrorCode, ProtocolError, error_message
from .runner import BatchRunner
from .session import Session
from .settings import HEALTH_PATH, STREAM_PATH, ServerSettings

log = logging.getLogger("ray.serve")

#: A replica's report older than this is from a replica that died; the registry drops it.
STALE_AFTER_S = 5.0
REPORT_EVERY_S = 1.0
#: WebSocket close codes: policy violation, message too big, try again later, server error.
_CLOSE_CODES = {ErrorCode.TOO_LARGE: 1009, ErrorCode.FULL: 1013, ErrorCode.INTERNAL: 1011}
#: A client that sends nothing for this long is disconnected (a stalled handshake or stream;
#: a paused live client reconnects when it resumes).
IDLE_TIMEOUT_S = 600.0

app = FastAPI(title="avatarcam server")


async def _close(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    if websocket.client_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.send_bytes(error_message(code, message))
        await websocket.close(code=_CLOSE_CODES.get(code, 1008), reason=code.value)


def _set_threads(settings: ServerSettings) -> int:
    """CPU threads of this replica's engines: Ray gives an actor without CPUs one thread;
    replicas on one node share its cores instead."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = settings.threads or max(1, (cores or 1) // settings.replicas)
    torch.set_num_threads(threads)
    return threads


def _replica_name() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return uuid.uuid4().hex[:8]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Registry:
    """Collects each replica's latest report (sessions, frames, batch sizes)."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, Any]] = {}

    def report(self, replica: str, snapshot: dict[str, Any]) -> None:
        self._reports[replica] = {**snapshot, "reported": time.time()}

    def remove(self, replica: str) -> None:
        self._reports.pop(replica, None)

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


@serve.deployment
@serve.ingress(app)
class AvatarServer:
    """One model replica: its engines, the sessions whose WebSockets it holds, their batches."""

    def __init__(self, settings: ServerSettings, registry: Any):
        self.settings = settings
        self.registry = registry  # DeploymentHandle of the Registry
        self.threads = _set_threads(settings)
        self.runner = BatchRunner(settings)
        self.replica = _replica_name()
        self.sessions: dict[str, Session] = {}
        self.sessions_total = 0
        self.refused = 0
        self.batcher = FrameBatcher(
            self.runner.animate,
            settings.max_batch,
            settings.batch_wait_ms / 1000,
            active=lambda: len(self.sessions),
        )
        self._reporter: asyncio.Task | None = None
        with contextlib.suppress(RuntimeError):  # report at once when built on a running loop
            self._ensure_reporter()
        log.info("avatarcam replica %s: %s", self.replica, self.runner.describe())

    # --- statistics --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "sessions_total": self.sessions_total,
            "refused": self.refused,
            "frames": self.runner.frames,
            "busy_s": round(self.runner.busy_s, 3),
            "batches": {str(k): v for k, v in sorted(self.runner.batches.items())},
            "pid": os.getpid(),
            "threads": self.threads,
        }

    async def _report(self) -> None:
        with contextlib.suppress(Exception):
            await self.registry.report.remote(self.replica, self.snapshot())

    async def _report_forever(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(REPORT_EVERY_S)

    def _ensure_reporter(self) -> None:
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    # --- HTTP and WebSocket routes -------------------------------------------------------------

    @app.get(HEALTH_PATH)
    async def health(self) -> dict[str, Any]:
        self._ensure_reporter()
        await self._report()
        summary = await self.registry.summary.remote()
        return {
            "status": "ok",
            "protocol": PROTOCOL_VERSION,
            "model": self.runner.identity.to_json(),
            "max_batch": self.settings.max_batch,
            "max_sessions_per_replica": self.settings.max_sessions,
            **summary,
        }

    @app.websocket(STREAM_PATH)
    async def stream(self, websocket: WebSocket) -> None:
        self._ensure_reporter()
        await websocket.accept()
        name = uuid.uuid4().hex[:12]
        session = Session(
            self.runner,
            self.settings.token,
            self.batcher.submit,
            admit=lambda: self._admit(name, session),
            session_id=f"{self.replica}/{name}",
        )
        try:
            while True:
                message = await asyncio.wait_for(websocket.receive(), IDLE_TIMEOUT_S)
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    raise ProtocolError(ErrorCode.MALFORMED, "expected binary messages, got text")
                reply = await session.handle(data)
                if reply is not None:
                    await websocket.send_bytes(reply)
        except ProtocolError as exc:
            if exc.code is ErrorCode.FULL:
                self.refused += 1
            log.info("session %s closed: %s (%s)", name, exc.code.value, exc.message)
            await _close(websocket, exc.code, exc.message)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            pass
        except Exception as exc:  # a server fault ends this session only
            log.exception("session %s failed", name)
            await _close(websocket, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            if self.sessions.pop(name, None) is not None:
                log.info("session %s ended after %d frames", name, session.frames)
            await self._report()

    def _admit(self, name: str, session: Session) -> None:
        if len(self.sessions) >= self.settings.max_sessions:
            raise ProtocolError(
                ErrorCode.FULL,
                f"the server is full ({self.settings.max_sessions} sessions per replica, "
                f"{self.settings.replicas} replica(s)); try again later or start it with more "
                "--replicas or a higher --max-sessions",
            )
        self.sessions[name] = session
        self.sessions_total += 1


def build(settings: ServerSettings) -> Any:
    """The application to pass to ``serve.run``."""
    num_gpus = 0.0
    if settings.device.startswith("cuda") or settings.device == "auto":
        import torch

        gpus = torch.cuda.device_count()
        if gpus:
            num_gpus = min(1.0, gpus / settings.replicas)
    registry = Registry.bind()
    return AvatarServer.options(
        num_replicas=settings.replicas,
        # A WebSocket is one long request: room for every session and health checks.
        max_ongoing_requests=settings.max_sessions + 8,
        ray_actor_options={"num_cpus": 0, "num_gpus": num_gpus},
    ).bind(settings, registry)
