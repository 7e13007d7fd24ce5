"""The proxy's admission middleware (engines.serve.admission) on a plain ASGI double of Ray
Serve's proxy app, and the budget it shares with the registry."""

from __future__ import annotations

import asyncio
import json

import pytest

from engines.serve.admission import (
    CONNECT_REFILL_S,
    STRIKE_PENALTY_S,
    ArrivalBudget,
    ProxyAdmission,
)
from engines.serve.settings import STREAM_PATH


class Proxy:
    """Stands in for Ray Serve's proxy app: records what reached it; a stream stays open until
    its ``release`` event is set."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send) -> None:
        name = f"{scope['type']} {scope.get('path')} {scope['client'][0]}"
        self.reached.append(name)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})
        elif scope.get("path") != "/other":
            event = self.release.setdefault(name + f" #{len(self.reached)}", asyncio.Event())
            await event.wait()


def _scope(host: str, kind: str = "websocket", path: str = STREAM_PATH, denial: bool = True):
    scope = {"type": kind, "path": path, "client": (host, 40000)}
    if denial:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


OPEN: list[asyncio.Task] = []  # connections the double holds open, for the test to await


async def _connect(middleware: ProxyAdmission, scope) -> list[dict]:
    """One connection through the middleware: what it sent the client (empty: passed on)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    task = asyncio.ensure_future(middleware(scope, receive, send))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if task.done():
        task.result()
        return sent
    OPEN.append(task)  # still open
    return sent


async def _end_all(proxy: Proxy) -> None:
    for event in proxy.release.values():
        event.set()
    await asyncio.gather(*OPEN)
    OPEN.clear()


def _denial(sent: list[dict]) -> tuple[int, dict, dict]:
    start, body = sent
    assert start["type"] == "websocket.http.response.start"
    assert body["type"] == "websocket.http.response.body" and body["more_body"] is False
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body["body"])


def test_a_client_over_its_open_connections_is_refused_before_the_proxy_routes_it() -> None:
    async def run() -> None:
        proxy, clock = Proxy(), [100.0]
        middleware = ProxyAdmission(proxy, limit=2, clock=lambda: clock[0])
        assert await _connect(middleware, _scope("10.0.0.1")) == []
        assert await _connect(middleware, _scope("10.0.0.1")) == []
        status, headers, body = _denial(await _connect(middleware, _scope("10.0.0.1")))
        assert status == 429 and body["error"] == "full"
        assert "--max-sessions-per-client" in body["message"] and headers["retry-after"] == "10"
        assert len(proxy.reached) == 2  # the third never reached a replica
        assert await _connect(middleware, _scope("10.0.0.2")) == []  # another address
        assert middleware.open == {"10.0.0.1": 2, "10.0.0.2": 1}
        await _end_all(proxy)  # the streams end
        assert middleware.open == {}
        clock[0] += CONNECT_REFILL_S  # the budget refilled meanwhile
        assert await _connect(middleware, _scope("10.0.0.1")) == []
        assert middleware.refused == 1
        await _end_all(proxy)

    asyncio.run(run())


def test_reconnecting_in_a_loop_is_refused_with_the_time_to_wait() -> None:
    async def run() -> None:
        proxy, clock = Proxy(), [100.0]
        middleware = ProxyAdmission(proxy, limit=2, clock=lambda: clock[0])
        for _ in range(4):  # 2 x limit in a row, each closed at once
            assert await _connect(middleware, _scope("10.0.0.1")) == []
            await _end_all(proxy)
        status, headers, body = _denial(await _connect(middleware, _scope("10.0.0.1")))
        assert status == 429 and body["error"] == "rate_limited"
        assert "wait a few seconds" in body["message"]
        assert headers["retry-after"] == "5"  # one connection per 10 s / 2
        assert headers["content-type"] == "application/json"
        assert len(proxy.reached) == 4
        clock[0] += CONNECT_REFILL_S / 2
        assert await _connect(middleware, _scope("10.0.0.1")) == []
        assert len(proxy.reached) == 5
        await _end_all(proxy)

    asyncio.run(run())


def test_other_requests_pass_and_servers_without_the_denial_extension_get_a_close() -> None:
    async def run() -> None:
        proxy = Proxy()
        middleware = ProxyAdmission(proxy, limit=1)
        for _ in range(5):  # health checks and other paths are never counted
            assert await _connect(middleware, _scope("10.0.0.1", kind="http", path="/health"))
            assert await _connect(middleware, _scope("10.0.0.1", path="/other")) == []
        assert middleware.open == {} and len(proxy.reached) == 10
        assert await _connect(middleware, _scope("10.0.0.1", path=STREAM_PATH + "/")) == []
        assert middleware.open == {"10.0.0.1": 1}
        sent = await _connect(middleware, _scope("10.0.0.1", denial=False))
        assert sent == [{"type": "websocket.close", "code": 1013}]  # HTTP 403 from uvicorn
        await _end_all(proxy)

    asyncio.run(run())


def test_the_budget_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    budget = ArrivalBudget(4)
    assert [budget.take("h", 0.0) for _ in range(8)] == [0.0] * 8  # a burst of 2 x 4
    assert budget.take("h", 0.0) == pytest.approx(CONNECT_REFILL_S / 4)
    assert budget.take("h", 1.0) == pytest.approx(CONNECT_REFILL_S / 4 - 1.0)  # nothing spent
    assert budget.take("h", CONNECT_REFILL_S / 4) == 0.0
    assert budget.take("other", 0.0) == 0.0
    with pytest.raises(ValueError):
        ArrivalBudget(0)


def test_the_proxy_hook_installs_the_middleware_and_names_a_bad_variable(monkeypatch) -> None:
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")
    from engines.serve import proxy_hook

    monkeypatch.setenv(proxy_hook.MAX_BYTES_VARIABLE, "0")  # leaves uvicorn's Config alone
    monkeypatch.setenv(proxy_hook.PER_CLIENT_VARIABLE, "3")
    (middleware,) = proxy_hook.install()
    assert middleware.cls is ProxyAdmission and middleware.kwargs == {"limit": 3}
    monkeypatch.setenv(proxy_hook.PER_CLIENT_VARIABLE, "0")
    assert proxy_hook.install() == []
    monkeypatch.setenv(proxy_hook.PER_CLIENT_VARIABLE, "four")
    with pytest.raises(ValueError, match=r"\$AVATARCAM_MAX_SESSIONS_PER_CLIENT must be a whole"):
        proxy_hook.install()


class Replica:
    """Stands in for the proxy's route to a replica: reads ``reads`` client messages, then
    closes the way the replica would (``reason``: an ErrorCode value); ends early when the
    client disconnects."""

    def __init__(self, reason: str, reads: int) -> None:
        self.reason, self.reads = reason, reads

    async def __call__(self, scope, receive, send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        for _ in range(self.reads):
            if (await receive())["type"] == "websocket.disconnect":
                return
        await send({"type": "websocket.close", "code": 1008, "reason": self.reason})


async def _converse(middleware: ProxyAdmission, host: str, messages: list[dict]) -> list[dict]:
    """A whole connection: the client's ``messages`` after the upgrade; what it got back."""
    queue = [{"type": "websocket.connect"}, *messages]
    sent: list[dict] = []

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    await middleware(_scope(host), receive, send)
    return sent


MESSAGE = {"type": "websocket.receive", "bytes": b"message"}
GONE = {"type": "websocket.disconnect", "code": 1000}
TOO_BIG = {"type": "websocket.disconnect", "code": 1009}  # uvicorn's own close


@pytest.mark.parametrize(
    ("reason", "messages", "strikes"),
    [
        ("malformed", [MESSAGE], True),
        ("shape", [MESSAGE, MESSAGE], True),
        ("out_of_order", [MESSAGE, MESSAGE], True),
        ("too_large", [MESSAGE, MESSAGE], True),
        ("too_large", [MESSAGE, TOO_BIG], True),  # refused by uvicorn: no close from a replica
        ("timeout", [], True),  # silent: nothing before the HELLO deadline
        ("timeout", [MESSAGE], False),  # idle after HELLO
        ("unauthorized", [MESSAGE], False),  # a mistyped token is not an attack
        ("rate_limited", [MESSAGE, MESSAGE], False),
        ("full", [MESSAGE], False),
        ("out_of_order", [MESSAGE, GONE], False),  # the client ended it first
    ],
)
def test_a_connection_that_broke_the_protocol_keeps_its_address_out_for_a_while(
    reason, messages, strikes
) -> None:
    async def run() -> None:
        clock = [100.0]
        replica = Replica(reason, reads=len(messages))
        middleware = ProxyAdmission(replica, limit=4, clock=lambda: clock[0])
        await _converse(middleware, "10.0.0.1", messages)
        clock[0] += 1.0
        replica.reason, replica.reads = "timeout", 1  # from now on: idle after HELLO
        sent = await _converse(middleware, "10.0.0.1", [MESSAGE])
        if not strikes:
            assert sent[0]["type"] == "websocket.accept"
            return
        status, headers, body = _denial(sent)
        assert status == 429 and body["error"] == "rate_limited"
        assert f"broke the protocol ({reason})" in body["message"]
        assert "PROTOCOL.md" in body["message"]
        assert headers["retry-after"] == str(int(STRIKE_PENALTY_S - 1.0))
        other = await _converse(middleware, "10.0.0.2", [MESSAGE])
        assert other[0]["type"] == "websocket.accept"  # another address is not affected
        clock[0] += STRIKE_PENALTY_S
        again = await _converse(middleware, "10.0.0.1", [MESSAGE])
        assert again[0]["type"] == "websocket.accept"
        assert middleware.open == {}

    asyncio.run(run())
