"""The avatar server for real: Ray Serve on loopback (tiny golden model, 2 replicas), clients
through ``run_live.py --server``, and the fault cases. One server (the ``server`` fixture) for
this module and test_attacks.py; the last test here stops it mid-stream."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")

from engines.options import RemoteOptions
from engines.remote_engine import ServerError, connect
from engines.serve.protocol import (
    ErrorCode,
    MessageType,
    decode,
    encode,
    error_from,
)
from live.cli import main
from tests.conftest import ROOT, Golden, load_golden
from tests.engines.serve.ray_server import MAX_SESSIONS, REPLICAS, TOKEN, Server


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255).astype(np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _inputs(golden: Golden, folder: Path, repeat: int = 1) -> tuple[Path, Path, Path]:
    """Two different avatars and the golden's driving frames (``repeat`` times over)."""
    avatar_a, avatar_b = folder / "a.png", folder / "b.png"
    _write(avatar_a, _uint8(golden.arrays["source"]))
    _write(avatar_b, _uint8(golden.arrays["driving"][-1]))
    driving = folder / "driving"
    driving.mkdir()
    frames = golden.arrays["driving"]
    for i in range(len(frames) * repeat):
        _write(driving / f"{i:05d}.png", _uint8(frames[i % len(frames)]))
    return avatar_a, avatar_b, driving


def _client(server: Server, avatar: Path, driving: Path, output: Path, *extra: str) -> list:
    return [
        sys.executable,
        "run_live.py",
        *("--server", server.url, "--server-token", TOKEN, "--transport", "png"),
        *("--avatar", str(avatar), "--input", str(driving), "--output", str(output)),
        "--no-crop",
        *extra,
    ]


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path)).astype(int)


def test_two_streams_with_different_avatars_match_the_local_engine(
    server: Server, tmp_path: Path
) -> None:
    golden = load_golden("tiny64")
    avatar_a, avatar_b, driving = _inputs(golden, tmp_path)
    outputs = {avatar_a: tmp_path / "remote-a", avatar_b: tmp_path / "remote-b"}
    clients = [
        subprocess.Popen(
            _client(server, avatar, driving, out), cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for avatar, out in outputs.items()
    ]
    for client in clients:
        _, stderr = client.communicate(timeout=180)
        assert client.returncode == 0, stderr[-2000:]
    for avatar, remote in outputs.items():
        local = tmp_path / f"local-{avatar.stem}"
        args = ["--avatar", str(avatar), "--input", str(driving), "--output", str(local)]
        args += ["--checkpoint", str(golden.checkpoint), "--config", str(golden.config)]
        assert main([*args, "--resolution", "64", "--no-crop", "--backend", "torch"]) == 0
        names = sorted(p.name for p in local.iterdir())
        assert names == sorted(p.name for p in remote.iterdir())
        assert len(names) == len(golden.arrays["driving"])
        for name in names:
            assert np.abs(_read(remote / name) - _read(local / name)).max() <= 1
    a = _read(outputs[avatar_a] / "000003.png")
    b = _read(outputs[avatar_b] / "000003.png")
    assert np.abs(a - b).max() > 30  # each stream kept its own avatar
    health = server.wait_sessions(0)
    assert health["sessions"] == 0 and health["frames"] >= 2 * len(golden.arrays["driving"])
    assert sum(health["batch_sizes"].values()) > 0


def _raw_session(server: Server, token: str = TOKEN, source: str = "127.0.0.1"):
    """A session from ``source``: a client that breaks the protocol keeps its address out for
    a while (test_attacks.py), so such clients connect from addresses of their own."""
    from websockets.sync.client import connect as ws_connect

    socket_ = ws_connect(
        f"{server.url}/v1/stream", compression=None, proxy=None, source_address=(source, 0)
    ).__enter__()
    socket_.send(encode(MessageType.HELLO, {"token": token, "transport": "raw"}))
    return socket_, decode(socket_.recv(timeout=30), {})


def _with_avatar(server: Server, source: str = "127.0.0.1"):
    socket_, welcome = _raw_session(server, source=source)
    assert welcome.type is MessageType.WELCOME, welcome.meta
    avatar = _uint8(load_golden("tiny64").arrays["source"])
    socket_.send(encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")}))
    assert socket_.recv(timeout=30)[5] == MessageType.AVATAR_STATE
    return socket_


def _frame(socket_, seq: int) -> bytes:
    driving = _uint8(load_golden("tiny64").arrays["driving"][seq % 6])
    socket_.send(encode(MessageType.FRAME, images={"driving": (driving, "raw")}, seq=seq))
    return socket_.recv(timeout=30)


def _error(socket_) -> ErrorCode:
    from websockets.exceptions import ConnectionClosed

    reply = decode(socket_.recv(timeout=30), {})
    assert reply.type is MessageType.ERROR
    with pytest.raises(ConnectionClosed):  # the server closed this session
        socket_.recv(timeout=30)
    return error_from(reply).code


def test_a_client_that_disconnects_mid_stream_frees_its_session(server: Server) -> None:
    assert server.wait_sessions(0)["sessions"] == 0
    client = _with_avatar(server)
    assert _frame(client, 0)[5] == MessageType.RESULT
    assert server.wait_sessions(1)["sessions"] == 1
    client.socket.shutdown(socket.SHUT_RDWR)  # vanish without a closing handshake
    client.socket.close()
    assert server.wait_sessions(0)["sessions"] == 0


def test_bad_messages_close_their_session_only(server: Server) -> None:
    good = _with_avatar(server)
    assert _frame(good, 0)[5] == MessageType.RESULT
    bad = _with_avatar(server, "127.0.0.30")
    bad.send(b"this is not a message")
    assert _error(bad) is ErrorCode.MALFORMED
    assert _frame(good, 1)[5] == MessageType.RESULT
    assert _frame(good, 2)[5] == MessageType.RESULT
    good.close()
    assert server.wait_sessions(0)["sessions"] == 0


def test_out_of_order_and_oversized_messages_are_refused(server: Server) -> None:
    client = _with_avatar(server, "127.0.0.31")
    driving = _uint8(load_golden("tiny64").arrays["driving"][0])
    client.send(encode(MessageType.FRAME, images={"driving": (driving, "raw")}, seq=5))
    assert _error(client) is ErrorCode.ORDER
    client = _with_avatar(server, "127.0.0.32")
    # A "png" part of 30 kB for a 64 x 64 frame (12 kB raw): within the message limit (the
    # proxy refuses larger messages itself: test_attacks.py), over what an encoded frame takes.
    padded = encode(MessageType.FRAME, images={"driving": (driving, "png")})
    header, meta_length = padded[:12], int.from_bytes(padded[12:16], "little")
    meta = json.loads(padded[16 : 16 + meta_length])
    payload = padded[16 + meta_length :] + b"\0" * 30000
    meta["parts"][0]["nbytes"] = len(payload)
    body = json.dumps(meta).encode()
    client.send(header + len(body).to_bytes(4, "little") + body + payload)
    assert _error(client) is ErrorCode.TOO_LARGE
    assert server.wait_sessions(0)["sessions"] == 0


def test_a_wrong_token_is_refused(server: Server) -> None:
    socket_, reply = _raw_session(server, token="wrong")
    assert reply.type is MessageType.ERROR and error_from(reply).code is ErrorCode.UNAUTHORIZED
    socket_.close()
    with pytest.raises(ServerError, match=r"refused the session.*--server-token"):
        connect(RemoteOptions(server.url, token="wrong"))
    with pytest.raises(ServerError, match="missing"):
        connect(RemoteOptions(server.url))


def test_a_full_server_refuses_new_sessions(server: Server) -> None:
    capacity = MAX_SESSIONS * REPLICAS
    engines = []
    try:
        with pytest.raises(ServerError, match=r"is full.*--replicas"):
            for _ in range(capacity + 2):
                engines.append(connect(RemoteOptions(server.url, token=TOKEN)))
        assert MAX_SESSIONS <= len(engines) <= capacity
    finally:
        for engine in engines:
            engine.close()
    assert server.wait_sessions(0)["sessions"] == 0


def test_streams_benchmark_reports_rates_round_trips_and_batches(
    server: Server, tmp_path: Path
) -> None:
    from benchmarks.cli import main as bench

    golden = load_golden("tiny64")
    argv = [
        *("--server", server.url, "--server-token", TOKEN, "--streams", "1,2"),
        *("--backends", "torch", "--devices", "cpu", "--resolution", "64"),
        *("--config", str(golden.config), "--checkpoint", str(golden.checkpoint)),
        *("--iterations", "4", "--warmup", "1", "--out", str(tmp_path), "--name", "s"),
        *("--hostile", "4", "--no-plot"),
    ]
    assert bench(argv) == 0
    results = json.loads((tmp_path / "s.json").read_text())
    # Each point alone, then again with 4 hostile clients attacking meanwhile.
    assert [p["streams"] for p in results["points"]] == [1, 1, 2, 2]
    assert [p.get("hostile", {}).get("clients", 0) for p in results["points"]] == [0, 4, 0, 4]
    for point in results["points"][1::2]:
        outcomes = [o for kind in point["hostile"]["outcomes"].values() for o in kind]
        assert "not closed within 30 s" not in outcomes, point["hostile"]
    for point in results["points"]:
        assert len(point["per_stream_fps"]) == point["streams"]
        assert point["aggregate_fps"] > 0
        assert 0 < point["rtt_ms"]["p50"] <= point["rtt_ms"]["p99"]
        # Every timed and warm-up frame was animated in some batch the server formed.
        formed = sum(int(size) * calls for size, calls in point["batch_sizes"].items())
        assert formed >= point["streams"] * 5
    assert results["local"]["fps"] > 0
    assert "| 2 |" in (tmp_path / "s.md").read_text()
    assert server.wait_sessions(0)["sessions"] == 0


def test_a_server_that_stops_mid_stream_ends_an_offline_run_with_usable_output(
    server: Server, tmp_path: Path
) -> None:
    golden = load_golden("tiny64")
    avatar, _, driving = _inputs(golden, tmp_path, repeat=100)  # 600 frames
    video = tmp_path / "partial.mp4"
    client = subprocess.Popen(
        _client(server, avatar, driving, video), cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        done = server.health()["frames"]  # frames of the earlier tests
        while server.health()["frames"] < done + 30 and client.poll() is None:
            assert time.monotonic() < deadline, "the client made no progress"
            time.sleep(0.2)
        server.process.send_signal(signal.SIGINT)  # the server goes away mid-stream
        _, stderr = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode not in (0, None), stderr[-2000:]
    assert "error:" in stderr and server.url in stderr and "Traceback" not in stderr
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    # What was written before the server went is closed and readable.
    assert 0 < frames < 600, stderr[-2000:]
