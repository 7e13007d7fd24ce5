"""Who may use the control page: the holder of its token, from the page's own origin.

A random token is part of the URL the command prints (``?token=...``). The first request that
carries it gets it back as a cookie (HttpOnly, SameSite=Strict), so the page's own requests and
streams need not repeat it; scripts may send it as the ``X-Avatarcam-Token`` header or the
query parameter instead. A request without the token is refused (403). A state-changing
request (anything but GET/HEAD) that carries an ``Origin`` other than the page's own is refused
too: a web page the user visits cannot drive their camera, even with the cookie. Requests
without ``Origin`` (curl, a Stream Deck plugin) need the token like any other.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_HEADER = "x-avatarcam-token"
SAFE_METHODS = ("GET", "HEAD")


def new_token() -> str:
    """A fresh random token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def cookie_name(port: int) -> str:
    """The cookie holding the token; cookies are shared by all ports of a host, so the port
    is part of the name."""
    return f"avatarcam_token_{port}"


def page_origins(hosts: Iterable[str], port: int) -> frozenset[str]:
    """The origins the page is served from (``http://HOST:PORT`` for each host name)."""
    return frozenset(f"http://{host}:{port}" for host in hosts)


class TokenGuard:
    """ASGI middleware: refuses requests without the token and state-changing requests from
    foreign origins; sets the cookie when the token came in the query."""

    def __init__(self, app: ASGIApp, token: str, origins: frozenset[str], cookie: str):
        self.app = app
        self.token = token
        self.origins = origins  # e.g. {"http://127.0.0.1:8770", "http://localhost:8770"}
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        from_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        given = from_query[:1] or [headers.get(TOKEN_HEADER, "")]
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookies = SimpleCookie()
        if self.cookie in cookies:
            given.append(cookies[self.cookie].value)
        if not any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given if g):
            await _refuse(
                "Forbidden: this page needs its token. Open the URL run_live.py printed "
                "(it ends in ?token=...).",
                scope,
                receive,
                send,
            )
            return
        origin = headers.get("origin")
        foreign = origin is not None and origin not in self.origins
        if scope["method"] not in SAFE_METHODS and foreign:
            await _refuse(
                f"Forbidden: requests from {origin} may not control avatarcam; use the "
                "control page itself.",
                scope,
                receive,
                send,
            )
            return
        if not from_query:
            await self.app(scope, receive, send)
            return
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"set-cookie", cookie.encode("latin-1")),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _refuse(text: str, scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(text, status_code=403)(scope, receive, send)
