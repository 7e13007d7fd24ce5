"""The Ray Serve application: a FastAPI ingress with one WebSocket per stream, N model replicas
that batch their sessions' frames (:class:`~engines.serve.batcher.FrameBatcher`), and a
registry that sums what every replica reports for the health endpoint.

Imports Ray and FastAPI at module level: only :mod:`engines.serve.server` imports this module,
after checking that the ``serve`` extra is installed. No ``from __future__ import annotations``:
FastAPI reads the route parameters' annotations (``WebSocket``) at run time, in the replica.
"""

import asyncio
import contextlib
import hmac
import logging
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from ray import serve
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .admission import MESSAGE_TOO_BIG, violation
from .batcher import FrameBatcher
from .loopback import bind_replica_to_loopback
from .protocol import PROTOCOL_VERSION, ErrorCode, ProtocolError, error_message
from .registry import Registry
from .runner import BatchRunner
from .session import Session
from .settings import HEALTH_PATH, STREAM_PATH, ServerSettings

log = logging.getLogger("ray.serve")

REPORT_EVERY_S = 1.0
#: WebSocket close codes: policy violation, message too big, try again later, server error.
_CLOSE_CODES = {ErrorCode.TOO_LARGE: 1009, ErrorCode.FULL: 1013, ErrorCode.INTERNAL: 1011}
#: A session counts as active (its frame is worth waiting for in a batch) this long after its
#: latest frame.
ACTIVE_WINDOW_S = 1.0
#: Engine calls failing in a row before the health check fails and Ray restarts the replica.
UNHEALTHY_AFTER_ERRORS = 3
#: What a client is told when the server fails on its message (details go to the server log).
_INTERNAL = (
    "the server failed on this message (its log has the details); reconnect to try again, "
    "and tell the server's operator if it keeps happening"
)

# No /docs, /redoc or /openapi.json: the API is the WebSocket protocol (PROTOCOL.md).
app = FastAPI(title="avatarcam server", docs_url=None, redoc_url=None, openapi_url=None)


async def _close(websocket: WebSocket, code: ErrorCode, message: str) -> None:
    if websocket.client_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.send_bytes(error_message(code, message))
        await websocket.close(code=_CLOSE_CODES.get(code, 1008), reason=code.value)


# Defined above the deployment: serve.ingress serializes the routes when the class is made.
def _timeout_message(session: Session, timeout: float | None) -> str:
    if not session.ready:
        return f"no HELLO within {timeout:g} s: send HELLO as soon as the connection opens"
    return f"no message for {timeout:g} s: reconnect when you resume"


def _set_threads(settings: ServerSettings) -> int:
    """CPU threads of this replica's engines: Ray gives an actor without CPUs one thread;
    replicas on one node share its cores instead."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = settings.threads or max(1, (cores or 1) // settings.replicas)
    torch.set_num_threads(threads)
    return threads


def _check_node(settings: ServerSettings) -> None:
    """A replica on a worker node needs the checkpoint at the head's path."""
    if not settings.checkpoint.is_file():
        import socket

        raise RuntimeError(
            f"avatarcam replica on {socket.gethostname()}: no checkpoint at "
            f"{settings.checkpoint}. Copy it to that path on every node of the Ray cluster "
            "(the same absolute path as on the machine that ran python -m engines.serve)"
        )


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in Ray (tests that build the class directly)
        return "local"


def _replica_name() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return uuid.uuid4().hex[:8]


@serve.deployment
@serve.ingress(app)
class AvatarServer:
    """One model replica: its engines, the sessions whose WebSockets it holds, their batches."""

    def __init__(self, settings: ServerSettings, registry: Any):
        if settings.loopback and not settings.address:
            bind_replica_to_loopback()
        _check_node(settings)
        self.settings = settings
        self.registry = registry  # DeploymentHandle of the Registry
        self.threads = _set_threads(settings)
        self.runner = BatchRunner(settings)
        self.replica = _replica_name()
        self.node = _node_id()  # the Ray node this replica runs on
        self.sessions: dict[str, Session] = {}
        self.sessions_total = 0
        self.refused = 0
        self.batcher = FrameBatcher(
            self.runner.animate,
            settings.max_batch,
            settings.batch_wait_ms / 1000,
            active=self._active,
            timeout_s=settings.engine_timeout_s,
        )
        self._reporter: asyncio.Task | None = None
        with contextlib.suppress(RuntimeError):  # report at once when built on a running loop
            self._ensure_reporter()
        log.info("avatarcam replica %s: %s", self.replica, self.runner.describe())

    def _active(self) -> int:
        """Sessions that sent a frame recently: a partial batch waits only for those."""
        recent = time.monotonic() - ACTIVE_WINDOW_S
        return sum(1 for session in self.sessions.values() if session.last_frame > recent)

    def check_health(self) -> None:
        """Ray Serve's health check: fails while an engine call is stuck or after repeated
        engine errors, so that Ray replaces this replica."""
        problem = self.batcher.healthy()
        if problem is None and self.batcher.errors >= UNHEALTHY_AFTER_ERRORS:
            problem = f"{self.batcher.errors} engine calls failed in a row"
        if problem is not None:
            log.error("replica %s unhealthy: %s", self.replica, problem)
            raise RuntimeError(f"avatarcam replica unhealthy: {problem}")

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
            "node": self.node,
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
    async def health(self, request: Request) -> dict[str, Any]:
        """Liveness for anyone; the details (model, sessions, replicas) need the token when
        the server has one (``Authorization: Bearer TOKEN``)."""
        self._ensure_reporter()
        brief = {"status": "ok", "protocol": PROTOCOL_VERSION}
        if self.settings.token is not None:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {self.settings.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return {**brief, "details": "send Authorization: Bearer TOKEN for details"}
        await self._report()
        summary = await self.registry.summary.remote()
        return {
            **brief,
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
        host = websocket.client.host if websocket.client else "unknown"
        session = Session(
            self.runner,
            self.settings.token,
            self.batcher.submit,
            admit=lambda: self._admit(name, session),
            session_id=f"{self.replica}/{name}",
        )
        counted = False
        broke: str | None = None  # the protocol violation that ended this connection
        receiving: asyncio.Task | None = None
        working: asyncio.Task | None = None
        try:
            counted = await self._open(name, host)
            receiving = asyncio.ensure_future(websocket.receive())
            while True:
                # A request in flight has the engine's deadline; otherwise the client must send
                # HELLO within hello_timeout_s, and then something within idle_timeout_s.
                timeout = None
                if working is None:
                    timeout = (
                        self.settings.idle_timeout_s
                        if session.ready
                        else self.settings.hello_timeout_s
                    )
                waiting = {receiving} if working is None else {receiving, working}
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    raise ProtocolError(ErrorCode.TIMEOUT, _timeout_message(session, timeout))
                if working is not None and working in done:
                    reply, working = working.result(), None
                    if reply is not None:
                        await websocket.send_bytes(reply)
                if receiving in done:
                    message = receiving.result()
                    if message["type"] == "websocket.disconnect":
                        if message.get("code") == MESSAGE_TOO_BIG:  # the proxy refused one
                            broke = ErrorCode.TOO_LARGE.value
                        break
                    data = message.get("bytes")
                    if data is None:
                        raise ProtocolError(
                            ErrorCode.MALFORMED, "expected binary messages, got text"
                        )
                    if working is not None:
                        raise ProtocolError(
                            ErrorCode.ORDER,
                            "a message arrived before the reply to the previous one: wait "
                            "for each RESULT or AVATAR_STATE before sending the next message "
                            "(one request in flight per session)",
                        )
                    working = asyncio.ensure_future(session.handle(data))
                    receiving = asyncio.ensure_future(websocket.receive())
        except ProtocolError as exc:
            if exc.code is ErrorCode.FULL:
                self.refused += 1
            if violation(exc.code.value, session.ready):
                broke = exc.code.value
            log.info("session %s closed: %s (%s)", name, exc.code.value, exc.message)
            await _close(websocket, exc.code, exc.message)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            pass
        except Exception:  # a server fault ends this session only
            log.exception("session %s failed", name)
            await _close(websocket, ErrorCode.INTERNAL, _INTERNAL)
        finally:
            for task in (receiving, working):
                if task is not None and not task.done():
                    task.cancel()
            if counted:
                with contextlib.suppress(Exception):
                    await self.registry.close.remote(self.replica, name, broke)
            if self.sessions.pop(name, None) is not None:
                log.info("session %s ended after %d frames", name, session.frames)
                await self._report()  # else nothing changed that the next report misses

    async def _open(self, name: str, host: str) -> bool:
        """Count this connection against its client's cap (over all replicas); raises
        ProtocolError(FULL) when the client has too many. False: not counted (admitted)."""
        limit = self.settings.max_sessions_per_client
        try:
            refused = await self.registry.open.remote(self.replica, name, host, limit)
        except Exception:  # the registry is restarting: admit, the per-replica cap still holds
            log.warning("session %s: could not count connections per client", name)
            return False
        if refused:
            code, message = refused
            raise ProtocolError(ErrorCode(code), message)
        return True

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
    registry = Registry.bind(settings.loopback and not settings.address)
    return AvatarServer.options(
        num_replicas=settings.replicas,
        max_replicas_per_node=settings.max_replicas_per_node,
        # A WebSocket is one long request: room for every session and health checks.
        max_ongoing_requests=settings.max_sessions + 8,
        ray_actor_options={"num_cpus": 0, "num_gpus": gpus_per_replica(settings)},
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
    ).bind(settings, registry)


def gpus_per_replica(settings: ServerSettings) -> float:
    """``--gpus-per-replica``, else the cluster's GPUs shared by the replicas (at most one
    each), so that a CPU-only head still places replicas on GPU workers."""
    if settings.gpus_per_replica is not None:
        return settings.gpus_per_replica
    if settings.device == "cpu":
        return 0.0
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    return min(1.0, gpus / settings.replicas) if gpus else 0.0
