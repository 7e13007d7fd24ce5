"""Hostile clients against the real server (Ray Serve on loopback, shared ``server`` fixture):
each attack gets an error or a closed socket while a well-behaved client, connecting from
another loopback address (127.0.0.2), keeps getting frames. An attack that breaks the protocol
also keeps its address out for STRIKE_PENALTY_S, so each such test attacks from an address of
its own."""

from __future__ import annotations

import ipaddress
import json
import struct
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("psutil", reason="psutil lists the server's sockets")

import psutil
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from engines.options import RemoteOptions
from engines.remote_engine import ServerRefused, connect
from engines.serve.admission import STRIKE_PENALTY_S
from engines.serve.protocol import ErrorCode, MessageType, decode, encode, error_from
from engines.serve.session import AVATAR_BURST, max_message_bytes
from tests.conftest import load_golden
from tests.engines.serve.ray_server import HELLO_TIMEOUT_S, IDLE_TIMEOUT_S, PER_CLIENT, TOKEN

SIZE = 64


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255).astype(np.uint8)


def _open(server, source: str = "127.0.0.1"):
    return ws_connect(
        f"{server.url}/v1/stream",
        compression=None,
        proxy=None,
        max_size=None,
        open_timeout=30,
        source_address=(source, 0),
    ).__enter__()


def _hello(socket_) -> None:
    socket_.send(encode(MessageType.HELLO, {"token": TOKEN, "transport": "raw"}))
    reply = decode(socket_.recv(timeout=30), {})
    assert reply.type is MessageType.WELCOME, reply.meta


def _session(server, source: str = "127.0.0.1"):
    socket_ = _open(server, source)
    _hello(socket_)
    avatar = _uint8(load_golden("tiny64").arrays["source"])
    socket_.send(encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")}))
    assert socket_.recv(timeout=30)[5] == MessageType.AVATAR_STATE
    return socket_


class Good:
    """The well-behaved client: one frame at a time, from 127.0.0.2."""

    def __init__(self, server):
        self.socket = _session(server, "127.0.0.2")
        self.seq = 0

    def frame(self) -> None:
        driving = _uint8(load_golden("tiny64").arrays["driving"][self.seq % 6])
        data = encode(MessageType.FRAME, images={"driving": (driving, "raw")}, seq=self.seq)
        self.socket.send(data)
        reply = self.socket.recv(timeout=30)
        assert reply[5] == MessageType.RESULT, decode(reply, {}).meta
        self.seq += 1

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def good(server):
    client = Good(server)
    client.frame()
    yield client
    client.frame()  # still served after the attack
    client.close()


def _error(socket_, timeout: float = 30) -> ErrorCode:
    reply = decode(socket_.recv(timeout=timeout), {})
    assert reply.type is MessageType.ERROR
    assert "Traceback" not in reply.meta["message"]
    with pytest.raises(ConnectionClosed):  # the server closed this session
        socket_.recv(timeout=30)
    return error_from(reply).code


def _refused_upgrade(server, source: str) -> tuple[str, str]:
    """Open a connection the proxy must refuse: the error code and message of its HTTP 429."""
    with pytest.raises(InvalidStatus) as info:
        _open(server, source)
    response = info.value.response
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    body = json.loads(response.body)
    return body["error"], body["message"]


def _struck(server, source: str, reason: str) -> None:
    """``source`` broke the protocol: the proxy refuses its next connection at once."""
    code, message = _refused_upgrade(server, source)
    assert code == "rate_limited" and f"broke the protocol ({reason})" in message, message
    assert f"for {STRIKE_PENALTY_S:g} s" in message


def _jpeg_frame(image_bytes: bytes) -> bytes:
    template = encode(MessageType.FRAME, images={"driving": (np.zeros((SIZE, SIZE, 3)), "raw")})
    meta = (
        b'{"parts":[{"name":"driving","shape":[64,64,3],"dtype":"uint8","encoding":"jpeg",'
        b'"nbytes":' + str(len(image_bytes)).encode() + b"}]}"
    )
    return template[:12] + struct.pack("<I", len(meta)) + meta + image_bytes


def test_an_image_bomb_is_refused_from_its_header(server, good) -> None:
    """FF D8 FF FF C0: a fill byte, then a 32768 x 32768 frame header, as libjpeg reads it."""
    import cv2

    _, jpeg = cv2.imencode(".jpg", np.zeros((SIZE, SIZE, 3), np.uint8))
    jpeg = jpeg.tobytes()
    start = jpeg.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", jpeg, start + 2)
    sof = bytearray(jpeg[start : start + 2 + length])
    sof[5:9] = struct.pack(">HH", 32768, 32768)
    bomb = jpeg[:2] + b"\xff" + bytes(sof) + jpeg[2:start] + jpeg[start + 2 + length :]
    attacker = _session(server, "127.0.0.20")
    began = time.monotonic()
    attacker.send(_jpeg_frame(bomb))
    assert _error(attacker) is ErrorCode.SHAPE
    assert time.monotonic() - began < 10  # refused from the header, not decoded
    good.frame()
    _struck(server, "127.0.0.20", "shape")


def test_an_oversized_message_is_refused_before_it_is_buffered(server, good) -> None:
    """The proxy (uvicorn, bounded by engines.serve.proxy_hook) closes with 1009 from the frame
    header: no ERROR message from a replica that would have received it whole."""
    attacker = _session(server, "127.0.0.21")
    big = b"\0" * (4 * max_message_bytes(SIZE))  # far below uvicorn's default 16 MiB
    with pytest.raises(ConnectionClosed) as closed:
        attacker.send(big)
        attacker.recv(timeout=30)  # no reply: the connection is closed
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    good.frame()
    _struck(server, "127.0.0.21", "too_large")


def test_a_client_that_floods_frames_is_closed(server, good) -> None:
    attacker = _session(server, "127.0.0.22")
    driving = _uint8(load_golden("tiny64").arrays["driving"][0])
    for seq in range(20):  # without reading a single reply
        try:
            attacker.send(encode(MessageType.FRAME, images={"driving": (driving, "raw")}, seq=seq))
        except ConnectionClosed:
            break
    kinds = []
    with pytest.raises(ConnectionClosed):
        while True:
            data = attacker.recv(timeout=30)
            kinds.append(data[5])
            if data[5] == MessageType.ERROR:
                error = decode(data, {})
                assert error_from(error).code is ErrorCode.ORDER
                assert "one request in flight" in error.meta["message"]
    assert MessageType.ERROR in kinds
    assert kinds.count(MessageType.RESULT) <= 1  # one frame answered, the rest refused
    good.frame()
    _struck(server, "127.0.0.22", "out_of_order")


def test_connections_are_capped_per_client_address(server, good) -> None:
    idle = [_open(server, "127.0.0.3") for _ in range(PER_CLIENT)]
    try:
        code, message = _refused_upgrade(server, "127.0.0.3")  # over the cap: at the proxy
        assert code == "full" and "--max-sessions-per-client" in message
        good.frame()  # another address is not affected
    finally:
        for socket_ in idle:
            socket_.close()
    deadline = time.monotonic() + 10  # the proxy sees the closes a moment later
    while True:  # the slots come back once the client closed its connections
        try:
            _session(server, "127.0.0.3").close()
            break
        except InvalidStatus:
            assert time.monotonic() < deadline, "the slots did not come back within 10 s"
            time.sleep(0.2)


def test_silent_connections_are_closed_at_the_hello_deadline(server, good) -> None:
    idle = [_open(server, "127.0.0.23") for _ in range(3)]
    try:
        began = time.monotonic()
        assert _error(idle[0], timeout=HELLO_TIMEOUT_S + 20) is ErrorCode.TIMEOUT
        assert time.monotonic() - began < HELLO_TIMEOUT_S + 10
        for socket_ in idle[1:]:
            assert _error(socket_) is ErrorCode.TIMEOUT
        good.frame()
        _struck(server, "127.0.0.23", "timeout")
    finally:
        for socket_ in idle:
            socket_.close()


def test_reconnecting_in_a_loop_is_refused_by_the_proxy(server, good) -> None:
    """2 x PER_CLIENT connections in a row pass; the next is answered HTTP 429 at the upgrade,
    before any replica accepts it, while the good client keeps getting frames."""
    for _ in range(2 * PER_CLIENT):
        _open(server, "127.0.0.4").close()
    began = time.monotonic()
    code, message = _refused_upgrade(server, "127.0.0.4")
    assert code == "rate_limited" and "wait a few seconds" in message
    assert time.monotonic() - began < 5
    good.frame()


def test_a_silent_session_is_closed_after_the_idle_timeout(server, good) -> None:
    attacker = _session(server, "127.0.0.24")
    began = time.monotonic()
    while time.monotonic() - began < IDLE_TIMEOUT_S - 2:
        good.frame()  # the others go on meanwhile
        time.sleep(0.5)
    assert _error(attacker, timeout=20) is ErrorCode.TIMEOUT
    assert time.monotonic() - began < IDLE_TIMEOUT_S + 8
    _session(server, "127.0.0.24").close()  # idle after HELLO is no violation: welcome back


def test_avatars_are_rate_limited(server, good) -> None:
    attacker = _session(server, "127.0.0.25")  # one avatar sent
    avatar = _uint8(load_golden("tiny64").arrays["source"])
    message = encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")})
    for _ in range(AVATAR_BURST - 1):
        attacker.send(message)
        assert attacker.recv(timeout=30)[5] == MessageType.AVATAR_STATE
    attacker.send(message)
    assert _error(attacker) is ErrorCode.RATE
    good.frame()


def test_health_details_need_the_token_and_there_are_no_docs(server) -> None:
    anonymous = server.health(token=None)
    assert anonymous["status"] == "ok" and "model" not in anonymous and "replicas" not in anonymous
    assert "pid" not in str(anonymous)
    assert "model" in server.health() and server.health()["replicas"]
    for path in ("/docs", "/redoc", "/openapi.json"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10)
        assert info.value.code == 404


def test_refused_sessions_exit_with_status_2(server) -> None:
    for options in (
        RemoteOptions(server.url, token="wrong"),
        RemoteOptions(f"{server.url}/nothing/here", token=TOKEN),
    ):
        with pytest.raises(ServerRefused) as info:
            connect(options)
        assert info.value.exit_code == 2


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_every_process_of_a_loopback_server_listens_on_loopback_only(server) -> None:
    root = psutil.Process(server.process.pid)
    listening = []
    for process in [root, *root.children(recursive=True)]:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((process.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:  # a worker that just exited
            continue
    assert any(port == server.port for _, _, port in listening), listening  # the proxy
    assert len({name for name, _, _ in listening}) >= 3, listening  # gcs, raylet, workers
    exposed = [entry for entry in listening if not _loopback(entry[1])]
    assert not exposed, exposed
