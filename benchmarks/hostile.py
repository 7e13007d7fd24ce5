"""Hostile clients for the many-streams benchmark (``--hostile N``): while the well-behaved
streams run, N clients attack the same server in turn with image bombs (a JPEG whose frame
header, after a fill byte, says 32768 x 32768), frame floods (frames sent without reading a
reply), silent sockets (no HELLO) and oversized messages. Each attack is expected to end with
an error or a closed socket; the counts say what the server did.

Every hostile client connects from its own loopback address (127.0.0.10, .11, ...) when the
server is on loopback, so that the per-client connection cap applies to it and not to the
streams. No engines.serve import beyond the protocol's encoder.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ATTACKS = ("bomb", "flood", "silent", "oversized")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a local process (Linux), for the server's memory over a run."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _bomb(size: int) -> bytes:
    import cv2

    _, jpeg = cv2.imencode(".jpg", np.zeros((size, size, 3), np.uint8))
    data = jpeg.tobytes()
    start = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, start + 2)
    sof = bytearray(data[start : start + 2 + length])
    sof[5:9] = struct.pack(">HH", 32768, 32768)
    return data[:2] + b"\xff" + bytes(sof) + data[2:start] + data[start + 2 + length :]


class _Attacker:
    def __init__(self, url: str, token: str | None, size: int, kind: str, source: str | None):
        self.url, self.token, self.size, self.kind, self.source = url, token, size, kind, source
        self.outcomes: Counter[str] = Counter()

    def _open(self):
        from websockets.sync.client import connect

        extra = {"source_address": (self.source, 0)} if self.source else {}
        return connect(
            f"{self.url.rstrip('/')}/v1/stream",
            compression=None,
            proxy=None,
            max_size=None,
            open_timeout=10,
            **extra,
        ).__enter__()

    def _session(self):
        from engines.serve.protocol import MessageType, encode

        socket_ = self._open()
        hello = {"transport": "raw", **({"token": self.token} if self.token else {})}
        socket_.send(encode(MessageType.HELLO, hello))
        socket_.recv(timeout=10)
        avatar = np.zeros((self.size, self.size, 3), np.uint8)
        socket_.send(encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")}))
        socket_.recv(timeout=30)
        return socket_

    def once(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from engines.serve.protocol import MessageType, encode

        frame = np.zeros((self.size, self.size, 3), np.uint8)
        socket_ = self._open() if self.kind == "silent" else self._session()
        try:
            if self.kind == "bomb":
                parts = {"driving": (frame, "raw")}
                data = bytearray(encode(MessageType.FRAME, images=parts))
                bomb = _bomb(self.size)
                meta = (
                    b'{"parts":[{"name":"driving","shape":[%d,%d,3],"dtype":"uint8",'
                    b'"encoding":"jpeg","nbytes":%d}]}' % (self.size, self.size, len(bomb))
                )
                socket_.send(bytes(data[:12]) + struct.pack("<I", len(meta)) + meta + bomb)
            elif self.kind == "flood":
                parts = {"driving": (frame, "raw")}
                for seq in range(50):
                    socket_.send(encode(MessageType.FRAME, images=parts, seq=seq))
            elif self.kind == "oversized":
                socket_.send(b"\0" * (4 * self.size * self.size * 3 + (1 << 18)))
            while True:  # until the server closes
                socket_.recv(timeout=30)
        except ConnectionClosed:
            self.outcomes["closed by the server"] += 1
        except TimeoutError:
            self.outcomes["not closed within 30 s"] += 1
        finally:
            socket_.close()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.once()
            except Exception as exc:  # refused at connect (cap) or HELLO: also a defence
                self.outcomes[f"refused: {type(exc).__name__}"] += 1
                time.sleep(0.2)


def _run_attackers(url: str, token: str | None, size: int, count: int, stop: threading.Event):
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    loopback = host in ("127.0.0.1", "localhost")
    attackers = [
        _Attacker(
            url, token, size, ATTACKS[i % len(ATTACKS)], f"127.0.0.{10 + i}" if loopback else None
        )
        for i in range(count)
    ]
    threads = [threading.Thread(target=a.run, args=(stop,), daemon=True) for a in attackers]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(40)
    report: dict[str, Counter] = {}
    for attacker in attackers:
        report.setdefault(attacker.kind, Counter()).update(attacker.outcomes)
    return {kind: dict(outcomes) for kind, outcomes in report.items()}


@contextlib.contextmanager
def hostile_clients(url: str, token: str | None, size: int, count: int) -> Iterator[dict]:
    """Run ``count`` attackers until the block ends; yields a dict filled with their outcomes.

    The attackers run in a process of their own (``python -m benchmarks.hostile``), so that
    they share the machine's cores with the streams but not this process's interpreter lock.
    """
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.hostile", url, str(size), str(count)]
    env = {**os.environ, "AVATARCAM_SERVER_TOKEN": token or ""}
    child = subprocess.Popen(
        command, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    report: dict[str, Any] = {}
    try:
        yield report
    finally:
        out, _ = child.communicate("stop\n", timeout=120)  # the child stops on this line
        if child.returncode == 0 and out.strip():
            report.update(json.loads(out.strip().splitlines()[-1]))
        else:
            report["error"] = f"the hostile clients exited with status {child.returncode}"


def main() -> int:
    """``python -m benchmarks.hostile URL SIZE COUNT``: attack until a line on stdin."""
    import json
    import sys

    url, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    token = os.environ.get("AVATARCAM_SERVER_TOKEN") or None
    print(json.dumps(_run_attackers(url, token, size, count, stop)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
