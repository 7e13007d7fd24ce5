"""Who may open a stream: at most ``limit`` open connections per client address, and new ones
at most 2 x ``limit`` in a row, then ``limit`` per CONNECT_REFILL_S, so that a client that
reconnects in a loop is slowed down. A connection that breaks the protocol in a way no
well-behaved client does (:func:`violation`: a malformed, oversized or out-of-order message,
a frame of the wrong shape, no message at all before the HELLO deadline) costs its address
the right to connect for STRIKE_PENALTY_S, so that an attacker pays for its next attempt with
a 429, not the server with a session.

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
#: How long a client address may not connect after a connection of its broke the protocol.
STRIKE_PENALTY_S = 30.0
#: Errors a well-behaved client never causes (PROTOCOL.md); TIMEOUT counts only before HELLO.
VIOLATIONS = frozenset({ErrorCode.MALFORMED, ErrorCode.TOO_LARGE, ErrorCode.SHAPE, ErrorCode.ORDER})
#: The WebSocket close code of a message over the size limit (uvicorn closes with it itself).
MESSAGE_TOO_BIG = 1009
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


def violation(code: str, heard: bool) -> bool:
    """Whether a connection closed with error ``code`` broke the protocol; ``heard``: whether
    its client had sent anything (HELLO) before it timed out."""
    if code == ErrorCode.TIMEOUT.value:
        return not heard
    return code in {c.value for c in VIOLATIONS}


def struck(host: str, reason: str, wait_s: float) -> str:
    return (
        f"a connection from {host} broke the protocol ({reason}), so this address may not "
        f"connect for {STRIKE_PENALTY_S:g} s: try again in {math.ceil(wait_s)} s, with a "
        "client that follows PROTOCOL.md"
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
        self._strikes: dict[str, str] = {}  # host -> what its latest violation was

    def _allowance(self, host: str, now: float) -> float:
        if len(self._arrivals) > _FORGET_ABOVE:
            self._arrivals = {
                h: (t, at)
                for h, (t, at) in self._arrivals.items()
                if t + (now - at) * self.rate < self.burst
            }
            self._strikes = {h: r for h, r in self._strikes.items() if h in self._arrivals}
        tokens, then = self._arrivals.get(host, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def take(self, host: str, now: float) -> float:
        """Spend one connection of ``host``: 0.0 when it had one, else the seconds until it
        will (nothing spent)."""
        tokens = self._allowance(host, now)
        if tokens < 1:
            self._arrivals[host] = (tokens, now)
            return (1 - tokens) / self.rate
        self._arrivals[host] = (tokens - 1, now)
        self._strikes.pop(host, None)
        return 0.0

    def strike(self, host: str, now: float, reason: str) -> None:
        """``host`` broke the protocol (``reason``): its next connection waits STRIKE_PENALTY_S."""
        tokens = min(self._allowance(host, now), 1 - STRIKE_PENALTY_S * self.rate)
        self._arrivals[host] = (tokens, now)
        self._strikes[host] = reason

    def refusal(self, host: str, wait_s: float) -> str:
        """Why ``host`` must wait ``wait_s`` (the answer of a :meth:`take` that refused)."""
        reason = self._strikes.get(host)
        return too_fast(host, self.limit) if reason is None else struck(host, reason, wait_s)


class ProxyAdmission:
    """ASGI middleware for Ray Serve's HTTP proxy: refuses a stream connection whose client
    address already holds ``limit`` connections through this proxy, or reconnects faster than
    its :class:`ArrivalBudget`, before the proxy routes it to a replica. It watches what
    passes, and strikes the address of a connection that ends with a :func:`violation`: a
    close from the replica whose reason is such an error code, or uvicorn's own close for a
    message over the size limit.

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
            why = self.budget.refusal(host, wait)
            await self._deny(scope, receive, send, ErrorCode.RATE, why, wait)
            return
        self.open[host] = have + 1
        heard = False  # whether the client sent a message

        async def watch_receive() -> MutableMapping[str, Any]:
            nonlocal heard
            message = await receive()
            if message["type"] == "websocket.receive":
                heard = True
            elif message.get("code") == MESSAGE_TOO_BIG:  # a websocket.disconnect from uvicorn
                self.budget.strike(host, self.clock(), ErrorCode.TOO_LARGE.value)
            return message

        async def watch_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "websocket.close":
                reason = str(message.get("reason") or "")
                if violation(reason, heard):  # before the client can reconnect
                    self.budget.strike(host, self.clock(), reason)
            await send(message)

        try:
            await self.app(scope, watch_receive, watch_send)
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
