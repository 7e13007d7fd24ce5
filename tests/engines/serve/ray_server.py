"""One avatar server on Ray Serve for the test modules that need a real one (tiny golden model,
2 replicas, loopback): started once per test session by the ``server`` fixture (conftest.py)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT, load_golden

TOKEN = "test-token"
MAX_SESSIONS = 2  # per replica
REPLICAS = 2
PER_CLIENT = 10  # connections per client address (new ones: 20 in a row, then 10 per 10 s)
HELLO_TIMEOUT_S = 3.0
IDLE_TIMEOUT_S = 10.0


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self, token: str | None = TOKEN) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/health", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def wait_sessions(self, count: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["sessions"] == count or time.monotonic() > deadline:
                return health
            time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve() -> Iterator[Server]:
    golden = load_golden("tiny64")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "engines.serve",
        *("--checkpoint", str(golden.checkpoint), "--config", str(golden.config)),
        *("--resolution", "64", "--backend", "torch", "--device", "cpu"),
        *("--replicas", str(REPLICAS), "--max-batch", "4", "--max-sessions", str(MAX_SESSIONS)),
        *("--max-sessions-per-client", str(PER_CLIENT)),
        *("--hello-timeout", str(HELLO_TIMEOUT_S), "--idle-timeout", str(IDLE_TIMEOUT_S)),
        *("--num-cpus", "2", "--port", str(port)),
        *("--exit-after", "900"),  # a server left behind stops by itself
    ]
    # The token from the environment, as an operator who keeps it out of `ps` would pass it.
    env = {**os.environ, "AVATARCAM_SERVER_TOKEN": TOKEN}
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 300)
        line = process.stdout.readline() if ready else ""  # "ready", or the server exited
        if "ready" not in line:
            process.wait(30)
            pytest.fail(f"the server did not start (exit {process.returncode}): {line!r}")
        running = Server(process, port)
        # Both replicas report to the health endpoint.
        deadline = time.monotonic() + 60
        while len(running.health()["replicas"]) < REPLICAS and time.monotonic() < deadline:
            time.sleep(0.5)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
