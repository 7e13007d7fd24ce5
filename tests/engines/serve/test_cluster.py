"""The server on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster): one replica
per node, and sessions that all enter at the head's proxy served by the replicas of both
nodes."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")

import numpy as np
from websockets.sync.client import connect as ws_connect

from engines.serve.protocol import MessageType, decode, encode
from engines.serve.proxy_hook import environment
from engines.serve.session import max_message_bytes
from tests.conftest import ROOT, load_golden
from tests.engines.serve.ray_server import free_port

SESSIONS = 4


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as reply:
        return json.load(reply)


def _session(port: int):
    golden = load_golden("tiny64")
    socket_ = ws_connect(
        f"ws://127.0.0.1:{port}/v1/stream", compression=None, proxy=None, open_timeout=30
    ).__enter__()
    socket_.send(encode(MessageType.HELLO, {"transport": "raw"}))
    assert decode(socket_.recv(timeout=30), {}).type is MessageType.WELCOME
    avatar = np.round(golden.arrays["source"] * 255).astype(np.uint8)
    socket_.send(encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")}))
    assert socket_.recv(timeout=60)[5] == MessageType.AVATAR_STATE
    driving = np.round(golden.arrays["driving"][0] * 255).astype(np.uint8)
    socket_.send(encode(MessageType.FRAME, images={"driving": (driving, "raw")}))
    assert socket_.recv(timeout=60)[5] == MessageType.RESULT
    return socket_


def test_sessions_reach_the_replicas_of_both_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.cluster_utils import Cluster

    # What README asks of `ray start` on every node: the proxy bounds (messages, 4 connections
    # per client address as the server's default) and no local preference.
    for name, value in environment(max_message_bytes(64), 4).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "0")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    process = None
    sockets = []
    try:
        port, worker_port = free_port(), free_port()
        # The worker node's proxy on a port of its own: every session enters at the head.
        worker_env = {"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(worker_port)}
        cluster.add_node(num_cpus=1, env_vars=worker_env)
        cluster.wait_for_nodes()
        golden = load_golden("tiny64")
        command = [
            sys.executable,
            "-m",
            "engines.serve",
            *("--address", cluster.address, "--port", str(port)),
            *("--checkpoint", str(golden.checkpoint), "--config", str(golden.config)),
            *("--resolution", "64", "--backend", "torch", "--device", "cpu"),
            *("--replicas", "2", "--max-replicas-per-node", "1", "--max-batch", "1"),
            *("--exit-after", "600"),
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        ready, _, _ = select.select([process.stdout], [], [], 300)
        line = process.stdout.readline() if ready else ""
        assert "ready" in line, f"the server did not start (exit {process.poll()}): {line!r}"
        deadline = time.monotonic() + 60
        while len(_health(port)["replicas"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        replicas = _health(port)["replicas"]
        assert len({r["node"] for r in replicas.values()}) == 2, replicas  # one per node
        sockets = [_session(port) for _ in range(SESSIONS)]
        time.sleep(2)  # the next reports
        replicas = _health(port)["replicas"]
        serving = {r["node"] for r in replicas.values() if r["sessions"] > 0}
        assert len(serving) == 2, replicas  # sessions went to both nodes
        assert sum(r["sessions"] for r in replicas.values()) == SESSIONS
    finally:
        for socket_ in sockets:
            socket_.close()
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.shutdown()
