"""Who may open a stream: at most ``limit`` open connections per client address, and new ones
at most 2 x ``limit`` in a row, then ``limit`` per CONNECT_REFILL_S, so that a client that
reconnects in a loop is slowed down.

Checked in two places. Every node's HTTP proxy runs :class:`ProxyAdmission` (installed by
:mod:`engines.serve.proxy_hook`): it refuses a connection over its client's budget with an HTTP
429 in answer to the WebSocket upgrade, so that a refused connection costs the proxy one HTTP
exchange and never reaches a replica or the registry. The registry
(:mod:`engines.serve.registry`) counts again over all proxies of a cluster, where a client may
enter at several nodes. No Ray or Serve import: this module also runs inside the proxy.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .protocol import ErrorCode
from .settings import STREAM_PATH

#: A client address regains one new connection per CONNECT_REFILL_S / limit.
CONNECT_REFILL_S = 10.0
#: Addresses remembered before those whose allowance is full again are forgotten.
_FORGET_ABOVE = 4096

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def too_many(host: str, have: int, limit: int) -> str:
    return (
        f"{host} already has {have} connections to this server (at most {limit} per client "
        "address): close one, or start the server with a higher --max-sessions-per-client"
    )


def too_fast(host: str, limit: int) -> str:
    return (
        f"{host} opened more than {2 * limit} connections in a short time (then {limit} per "
        f"{CONNECT_REFILL_S:g} s): wait a few seconds, and keep one connection per stream open "
        "instead of reconnecting"
    )


class ArrivalBudget:
    """New connections per client address: a token bucket of 2 x limit, refilled at
    limit / CONNECT_REFILL_S. Times are the caller's (seconds on any one clock)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.burst = 2.0 * limit
        self.rate = limit / CONNECT_REFILL_S
        self._arrivals: dict[str, tuple[float, float]] = {}  # host -> (allowance, when)

    def take(self, host: str, now: float) -> float:
        """Spend one connection of ``host``: 0.0 when it had one, else the seconds until it
        will (nothing spent)."""
        if len(self._arrivals) > _FORGET_ABOVE:
            self._arrivals = {
                h: (t, at)
                for h, (t, at) in self._arrivals.items()
                if t + (now - at) * self.rate < self.burst
            }
        tokens, then = self._arrivals.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._arrivals[host] = (tokens, now)
            return (1 - tokens) / self.rate
        self._arrivals[host] = (tokens - 1, now)
        return 0.0


class ProxyAdmission:
    """ASGI middleware for Ray Serve's HTTP proxy: refuses a stream connection whose client
    address already holds ``limit`` connections through this proxy, or reconnects faster than
    its :class:`ArrivalBudget`, before the proxy routes it to a replica.

    The refusal answers the WebSocket upgrade with HTTP 429, a ``Retry-After`` header and a JSON
    body ``{"error": CODE, "message": ...}`` (ASGI's WebSocket denial response), or, on a server
    without that extension, with a plain close (HTTP 403). Other requests pass untouched.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        limit: int,
        path: str = STREAM_PATH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limit = limit
        self.path = path
        self.clock = clock
        self.budget = ArrivalBudget(limit)
        self.open: dict[str, int] = {}  # client address -> connections in progress
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope.get("path", "").rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = str(client[0]) if client else "unknown"
        have = self.open.get(host, 0)
        if have >= self.limit:
            await self._deny(scope, receive, send, ErrorCode.FULL, too_many(host, have, self.limit))
            return
        wait = self.budget.take(host, self.clock())
        if wait > 0:
            await self._deny(scope, receive, send, ErrorCode.RATE, too_fast(host, self.limit), wait)
            return
        self.open[host] = have + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.open.get(host, 1) - 1
            if left > 0:
                self.open[host] = left
            else:
                self.open.pop(host, None)

    async def _deny(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        code: ErrorCode,
        message: str,
        wait_s: float = CONNECT_REFILL_S,
    ) -> None:
        self.refused += 1
        await receive()  # websocket.connect: the upgrade request, answered below
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1013})
            return
        body = json.dumps({"error": code.value, "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(max(1, math.ceil(wait_s))).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
