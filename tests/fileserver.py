"""A local HTTP file server for download tests (127.0.0.1, bounded, stops by itself).

Test modules import the ``file_server`` fixture from here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SERVER_LIFETIME_S = 300.0  # the request loop ends by itself after this long
MAX_REQUESTS = 500  # ... or after this many requests


@dataclass
class Served:
    """One file the server offers."""

    body: bytes  # the content
    content_type: str = "application/octet-stream"
    cut_once: bool = False  # drop the connection half-way through the first full response
    honour_range: bool = True  # answer Range requests with 206


@dataclass
class FileServer:
    """Files by path, and a log of the requests seen (path, Range header)."""

    base: str  # http://127.0.0.1:PORT
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            wanted = self.headers.get("Range")
            server.requests.append((path, wanted))
            served = server.files.get(path)
            if served is None:
                self.send_error(404, "Not Found")
                return
            body, start = served.body, 0
            if wanted and served.honour_range and wanted.startswith("bytes="):
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", served.content_type)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if served.cut_once and start == 0:
                served.cut_once = False
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture(scope="module")
def file_server() -> Iterator[FileServer]:
    """A file server on 127.0.0.1; tests put files in ``files`` and read ``requests``."""
    state = FileServer(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.timeout = 0.2
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    stop = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + SERVER_LIFETIME_S
        handled = 0
        while not stop.is_set() and time.monotonic() < deadline and handled < MAX_REQUESTS:
            before = len(state.requests)
            httpd.handle_request()
            handled += len(state.requests) > before

    thread = threading.Thread(target=loop, name="test-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        httpd.server_close()
