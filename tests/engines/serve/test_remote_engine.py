"""The remote backend against an in-process server (a replica's Session over a plain WebSocket
server, no Ray): the Engine session API, and what happens when the server goes away: live runs
reconnect with back-off and re-send the avatar and motion, offline runs fail with ServerError."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")

from engines.errors import EngineError, EngineUnavailable
from engines.frames import image_to_input
from engines.options import RemoteOptions
from engines.remote_engine import (
    BACKOFF_S,
    ModelChanged,
    RemoteEngine,
    ServerError,
    ServerRefused,
    connect,
)
from engines.serve.protocol import ErrorCode, ProtocolError, error_message
from engines.serve.runner import BatchRunner, FrameJob
from engines.serve.session import Session
from engines.watermark import Watermarker
from live.animator import Animator
from tests.conftest import load_golden


class LocalServer:
    """Serves sessions on 127.0.0.1 in a thread; ``kill`` drops every connection abruptly."""

    def __init__(self, runner: BatchRunner, port: int = 0):
        from websockets.sync.server import serve

        self.runner = runner
        self.connections: list = []
        self.server = serve(self._handle, "127.0.0.1", port, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _handle(self, connection) -> None:
        from websockets.exceptions import ConnectionClosed

        self.connections.append(connection)

        async def animate(job: FrameJob):
            return self.runner.animate([job])[0]

        session = Session(self.runner, None, animate)
        try:
            for data in connection:
                reply = asyncio.run(session.handle(data))
                if reply is not None:
                    connection.send(reply)
        except ProtocolError as exc:
            connection.send(error_message(exc.code, exc.message))
        except (ConnectionClosed, OSError):
            pass

    def kill(self) -> None:
        self.server.shutdown()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.socket.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)


@pytest.fixture
def server(runner: BatchRunner) -> Iterator[LocalServer]:
    running = LocalServer(runner)
    yield running
    running.kill()


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255).astype(np.uint8)


def test_the_session_api_matches_a_local_engine(server: LocalServer, runner) -> None:
    golden = load_golden("tiny64")
    avatar, driving = _uint8(golden.arrays["source"]), _uint8(golden.arrays["driving"])
    with connect(RemoteOptions(server.url, transport="raw")) as remote:
        assert remote.io == runner.io
        assert "tiny64" in remote.describe() and "remote" in remote.selection_reason
        local = runner.engines[1]
        animators = [Animator(remote), Animator(local)]
        for animator in animators:
            animator.set_avatar(avatar)
        marker = Watermarker(local.io.resolution)
        assert remote.marks_frames and not local.marks_frames
        for frame in driving:
            out_remote, out_local = (a.animate(frame) for a in animators)
            # The server returns the local engine's frame with the watermark (and only once).
            expected = marker.embed(out_local.image)
            assert np.abs(out_remote.image.astype(int) - expected).max() <= 1
            assert np.abs(out_remote.image.astype(int) - out_local.image).max() > 1
            np.testing.assert_allclose(
                out_remote.keypoints.value, out_local.keypoints.value, atol=1e-5
            )
        assert remote.last_rtt_ms is not None and remote.last_rtt_ms > 0
        with pytest.raises(Exception, match="does not run single graphs"):
            remote.run("frame", {})
    assert remote.closed


def test_jpeg_transport_is_lossy_but_close(server: LocalServer, runner) -> None:
    golden = load_golden("tiny64")
    avatar, driving = _uint8(golden.arrays["source"]), _uint8(golden.arrays["driving"][2])
    outputs = {}
    for transport in ("png", "jpeg"):
        with connect(RemoteOptions(server.url, transport=transport, jpeg_quality=95)) as remote:
            animator = Animator(remote)
            animator.set_avatar(avatar)
            outputs[transport] = animator.animate(driving).image.astype(int)
    difference = np.abs(outputs["jpeg"] - outputs["png"])
    assert 0 < difference.mean() < 4  # lossy, but close at quality 95


def test_live_runs_reconnect_with_back_off_and_resend_the_session(
    runner: BatchRunner,
) -> None:
    golden = load_golden("tiny64")
    avatar, driving = _uint8(golden.arrays["source"]), _uint8(golden.arrays["driving"])
    first = LocalServer(runner)
    port = first.port
    remote = RemoteEngine(RemoteOptions(first.url, reconnect=True, timeout_s=5))
    animator = Animator(remote)
    animator.set_avatar(avatar)
    animator.animate(driving[0])  # calibrates on frame 0: the motion is now relative
    before = animator.animate(driving[3]).image.copy()
    first.kill()
    with pytest.raises(EngineUnavailable, match=r"reconnecting in 0\.5 s \(attempt 1\)"):
        animator.animate(driving[3])
    began = time.monotonic()
    with pytest.raises(EngineUnavailable):  # too early to retry: fails at once, no blocking
        animator.animate(driving[3])
    assert time.monotonic() - began < 0.1
    time.sleep(BACKOFF_S[0] + 0.1)
    with pytest.raises(EngineUnavailable, match=r"reconnecting in 1 s \(attempt 2\)"):
        animator.animate(driving[3])  # still down: the wait doubles
    second = LocalServer(runner, port)
    try:
        time.sleep(BACKOFF_S[1] + 0.1)
        after = animator.animate(driving[3]).image  # avatar and motion were sent again
        assert remote.status == "connected"
        np.testing.assert_array_equal(after, before)
    finally:
        remote.close()
        second.kill()


def test_offline_runs_fail_with_a_server_error(runner: BatchRunner) -> None:
    golden = load_golden("tiny64")
    server = LocalServer(runner)
    remote = connect(RemoteOptions(server.url))
    remote.set_avatar(image_to_input(_uint8(golden.arrays["source"])))
    server.kill()
    with pytest.raises(ServerError, match=r"closed the connection|lost the avatar server"):
        remote.animate(image_to_input(_uint8(golden.arrays["driving"][0])))
    remote.close()


def test_connection_errors_say_what_to_do(runner: BatchRunner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServerError, match=r"python -m engines\.serve"):
        connect(RemoteOptions(f"ws://127.0.0.1:{port}", timeout_s=2))
    with pytest.raises(Exception, match="ws://HOST:PORT"):
        connect(RemoteOptions("http://example"))
    with pytest.raises(Exception, match="transport"):
        connect(RemoteOptions("ws://127.0.0.1:1", transport="gif"))


def test_a_refusal_is_reported_with_the_servers_reason(runner: BatchRunner) -> None:
    class Full(LocalServer):
        def _handle(self, connection) -> None:
            connection.recv()
            connection.send(error_message(ErrorCode.FULL, "the server is full (2 sessions)"))

    server = Full(runner)
    try:
        with pytest.raises(ServerError, match=r"is full: the server is full \(2 sessions\)"):
            connect(RemoteOptions(server.url))
    finally:
        server.kill()


@contextlib.contextmanager
def _denying(port: int = 0, retry_after: str = "5"):
    """A WebSocket server that answers every upgrade as the server's proxy answers a client
    over its budget: HTTP 429, Retry-After and a JSON body. Yields its URL and the list of
    upgrade requests it refused."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response
    from websockets.sync.server import serve

    body = b'{"error": "rate_limited", "message": "127.0.0.1 opened more than 8 connections"}'
    headers = [("Content-Type", "application/json"), ("Retry-After", retry_after)]
    headers.append(("Content-Length", str(len(body))))

    refused: list = []

    def deny(connection, request):
        refused.append(request.path)
        return Response(429, "Too Many Requests", Headers(headers), body)

    with serve(lambda c: None, "127.0.0.1", port, process_request=deny) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}", refused
        finally:
            server.shutdown()


def test_a_refusal_at_the_upgrade_is_reported_with_its_reason_and_wait(runner) -> None:
    """The server's proxy answers a client over its budget with HTTP 429 and a JSON body."""
    with _denying() as (url, _), pytest.raises(ServerRefused) as info:
        connect(RemoteOptions(url, timeout_s=5))
    assert str(info.value) == (
        f"the avatar server at {url} refused the connection (retry after 5 s): 127.0.0.1 "
        "opened more than 8 connections"
    )
    assert info.value.retry_after_s == 5.0 and info.value.exit_code == 2


def _lost(runner: BatchRunner) -> tuple[int, RemoteEngine, Animator, np.ndarray]:
    """A live run whose server went away after one frame: the server's port, the client, its
    animator and the driving frames."""
    golden = load_golden("tiny64")
    avatar, driving = _uint8(golden.arrays["source"]), _uint8(golden.arrays["driving"])
    first = LocalServer(runner)
    remote = RemoteEngine(RemoteOptions(first.url, reconnect=True, timeout_s=5))
    animator = Animator(remote)
    animator.set_avatar(avatar)
    animator.animate(driving[0])
    first.kill()
    with pytest.raises(EngineUnavailable):
        animator.animate(driving[1])
    assert "reconnecting in 0.5 s" in remote.status
    return first.port, remote, animator, driving


def test_a_live_reconnection_waits_as_long_as_the_server_asks(runner: BatchRunner) -> None:
    port, remote, animator, driving = _lost(runner)
    try:
        with _denying(port, retry_after="7") as (_, refused):
            time.sleep(BACKOFF_S[0] + 0.1)
            with pytest.raises(EngineUnavailable):
                animator.animate(driving[1])  # the 429: the next attempt in 7 s, not 1 s
            assert remote.status == "server asked to wait, reconnecting in 7 s (attempt 2)"
            time.sleep(BACKOFF_S[1] + 0.1)  # the back-off alone would try again now
            with pytest.raises(EngineUnavailable):
                animator.animate(driving[2])
            assert len(refused) == 1  # it did not
    finally:
        remote.close()


def test_a_reconnection_to_another_model_stops_with_a_model_error(runner: BatchRunner) -> None:
    port, remote, animator, driving = _lost(runner)
    other = copy.copy(runner)  # the same engines, announced as another checkpoint
    other.identity = dataclasses.replace(runner.identity, checkpoint_sha256="0" * 64)
    second = LocalServer(other, port)
    try:
        time.sleep(BACKOFF_S[0] + 0.1)
        with pytest.raises(ModelChanged, match=r"another model.*start it again") as info:
            animator.animate(driving[1])
        assert info.value.code is ErrorCode.MODEL and info.value.exit_code == 2
        assert "000000000000" in str(info.value)  # says what the server runs now
        with pytest.raises(EngineError):  # and stays stopped: no frame from the wrong model
            animator.animate(driving[2])
    finally:
        remote.close()
        second.kill()


def test_refused_sessions_exit_with_status_2_and_lost_servers_with_4(runner) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServerRefused) as refused_port:
        connect(RemoteOptions(f"ws://127.0.0.1:{port}", timeout_s=2))
    assert refused_port.value.exit_code == 2

    class Refusing(LocalServer):
        def _handle(self, connection) -> None:
            connection.recv()
            connection.send(error_message(ErrorCode.UNAUTHORIZED, "the token is wrong"))

    server = Refusing(runner)
    try:
        with pytest.raises(ServerRefused, match="refused the session") as bad_token:
            connect(RemoteOptions(server.url, token="x"))
        assert bad_token.value.exit_code == 2
    finally:
        server.kill()
    assert ServerError("lost").exit_code == 4  # a server lost mid-run: output kept
