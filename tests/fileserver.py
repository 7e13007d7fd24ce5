"""A local HTTP(S) file server for download tests (127.0.0.1, bounded, stops by itself).

Test modules import the ``file_server`` fixture (plain HTTP) or ``https_file_server`` (TLS with
a self-signed certificate made for the test, trusted through ``SSL_CERT_FILE``) from here."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
    etag: str | None = None  # sent as ETag; an If-Range that differs gets the whole file
    content_range_from: int | None = None  # a wrong Content-Range: claims to start here
    chunk_delay_s: float = 0.0  # sent in 64 KiB pieces with this pause between them
    chunked: bool = False  # Transfer-Encoding: chunked (no Content-Length)


@dataclass
class FileServer:
    """Files by path, and a log of the requests seen (path, Range header)."""

    base: str  # http://127.0.0.1:PORT
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    if_ranges: list[str | None] = field(default_factory=list)  # If-Range of each request
    drop_handshakes: int = 0  # TLS only: this many connections are cut mid-handshake

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
            if_range = self.headers.get("If-Range")
            server.if_ranges.append(if_range)
            served = server.files.get(path)
            if served is None:
                self.send_error(404, "Not Found")
                return
            body, start = served.body, 0
            stale = if_range is not None and if_range != served.etag
            if wanted and served.honour_range and wanted.startswith("bytes=") and not stale:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                claimed = start if served.content_range_from is None else served.content_range_from
                self.send_header("Content-Range", f"bytes {claimed}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            if served.etag:
                self.send_header("ETag", served.etag)
            self.send_header("Content-Type", served.content_type)
            if served.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for at in range(start, len(body), 1 << 16):
                    piece = body[at : at + (1 << 16)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if served.cut_once and start == 0:
                served.cut_once = False
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if not served.chunk_delay_s:
                self.wfile.write(body[start:])
                return
            for at in range(start, len(body), 1 << 16):
                self.wfile.write(body[at : at + (1 << 16)])
                self.wfile.flush()
                time.sleep(served.chunk_delay_s)

    return Handler


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made now (PEM files in ``folder``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up on purpose (the tests do) is not an error to print."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _TLSServer(_QuietServer):
    """Wraps each accepted connection in TLS; cuts ``state.drop_handshakes`` of them after the
    client's hello (the client sees the TLS connection end abruptly)."""

    context: ssl.SSLContext
    state: FileServer

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = self.socket.accept()
        sock.settimeout(5)
        if self.state.drop_handshakes > 0:
            self.state.drop_handshakes -= 1
            sock.recv(4096)  # the ClientHello
            sock.close()
            raise OSError("handshake dropped on purpose")
        return self.context.wrap_socket(sock, server_side=True), address


def _serve(httpd: ThreadingHTTPServer, state: FileServer) -> Iterator[FileServer]:
    httpd.timeout = 0.2
    httpd.daemon_threads = True
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


@pytest.fixture(scope="module")
def file_server() -> Iterator[FileServer]:
    """A file server on 127.0.0.1; tests put files in ``files`` and read ``requests``."""
    state = FileServer(base="")
    httpd = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield from _serve(httpd, state)


@pytest.fixture
def https_file_server(tmp_path: Path, monkeypatch) -> Iterator[FileServer]:
    """The same over HTTPS, with a certificate made for this test that clients trust."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    state = FileServer(base="")
    httpd = _TLSServer(("127.0.0.1", 0), _handler(state))
    httpd.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    httpd.context.load_cert_chain(cert, key)
    httpd.state = state
    state.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    yield from _serve(httpd, state)
