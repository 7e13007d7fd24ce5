"""The control page's guard: the token (query, cookie or header) and the Origin of actions."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("starlette", reason="the ui extra (pip install -e '.[ui]') is not installed")

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from live.ui.security import TokenGuard, cookie_name, new_token, page_origins

PORT = 8770
TOKEN = "s3cret-token"
OWN = "http://127.0.0.1:8770"


def _app() -> TokenGuard:
    calls = []

    async def handler(request):
        calls.append(request.method)
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/api/x", handler, methods=["GET", "POST"])])
    guard = TokenGuard(app, TOKEN, page_origins({"127.0.0.1", "localhost"}, PORT), "tok")
    guard.calls = calls  # type: ignore[attr-defined]
    return guard


def _request(
    guard: TokenGuard, method: str = "GET", query: str = "", headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/api/x",
        "raw_path": b"/api/x",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", PORT),
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, body


def test_a_request_without_the_token_is_refused() -> None:
    guard = _app()
    status, _, body = _request(guard)
    assert status == 403 and b"?token=" in body
    assert _request(guard, query="token=wrong")[0] == 403
    assert _request(guard, headers={"Cookie": "tok=wrong"})[0] == 403
    assert _request(guard, method="POST", headers={"Origin": OWN})[0] == 403
    assert guard.calls == []  # type: ignore[attr-defined]


def test_the_token_in_the_url_becomes_a_cookie() -> None:
    guard = _app()
    status, headers, body = _request(guard, query=f"token={TOKEN}")
    assert status == 200 and body == b"done"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"tok={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _request(guard, headers={"Cookie": f"other=1; tok={TOKEN}"})[0] == 200
    assert _request(guard, headers={"X-Avatarcam-Token": TOKEN})[0] == 200


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://127.0.0.1:9999", "null", "https://127.0.0.1:8770"]
)
def test_an_action_from_a_foreign_origin_is_refused(origin: str) -> None:
    guard = _app()
    cookie = {"Cookie": f"tok={TOKEN}"}
    status, _, body = _request(guard, method="POST", headers={**cookie, "Origin": origin})
    assert status == 403 and b"may not control" in body
    assert guard.calls == []  # type: ignore[attr-defined]
    # Reading is not an action; the page's own origin and scripts without Origin may act.
    assert _request(guard, headers={**cookie, "Origin": origin})[0] == 200
    assert _request(guard, method="POST", headers={**cookie, "Origin": OWN})[0] == 200
    assert _request(guard, method="POST", headers={"X-Avatarcam-Token": TOKEN})[0] == 200
    assert guard.calls == ["GET", "POST", "POST"]  # type: ignore[attr-defined]


def test_tokens_are_random_and_cookies_per_port() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 20 for t in tokens)
    assert cookie_name(8770) != cookie_name(8771)
