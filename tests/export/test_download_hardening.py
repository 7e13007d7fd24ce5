"""Downloads under hostile networks: TLS drops over a real HTTPS server on 127.0.0.1, two runs
downloading the same file, a Content-Range that is not the part asked for, If-Range, and a
server that sends more than the file."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import random
import ssl
import threading
from pathlib import Path

import pytest

from export import download as download_module
from export import part_lock
from export.download import DownloadError, Expected, download
from tests.fileserver import FileServer, Served

BODY = random.Random(11).randbytes(2 * download_module.CHUNK + 4321)


def _expected(body: bytes = BODY) -> Expected:
    return Expected(size=len(body), sha256=hashlib.sha256(body).hexdigest())


def test_tls_handshake_cut_is_retried(https_file_server: FileServer, tmp_path: Path) -> None:
    https_file_server.files["/tls.bin"] = Served(BODY)
    https_file_server.drop_handshakes = 2
    dest, out = tmp_path / "tls.bin", io.StringIO()
    download([https_file_server.url("tls.bin")], dest, _expected(), stream=out)
    assert dest.read_bytes() == BODY
    assert out.getvalue().count("resuming") == 2, out.getvalue()
    assert "TLS connection" in out.getvalue() and "could not write" not in out.getvalue().lower()


def test_https_body_cut_resumes(https_file_server: FileServer, tmp_path: Path) -> None:
    https_file_server.files["/half.bin"] = Served(BODY, cut_once=True)
    dest = tmp_path / "half.bin"
    download([https_file_server.url("half.bin")], dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY
    ranges = [r for p, r in https_file_server.requests if p == "/half.bin"]
    assert ranges == [None, f"bytes={len(BODY) // 2}-"]


def test_tls_eof_while_reading_is_a_network_drop(
    https_file_server: FileServer, tmp_path: Path, monkeypatch
) -> None:
    """ssl.SSLEOFError is an OSError: it must be retried, not reported as a disk problem."""
    https_file_server.files["/eof.bin"] = Served(BODY)
    real_read = http.client.HTTPResponse.read
    raised = []

    def read(self, amt=None):
        if not raised and amt:
            raised.append(True)
            raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
        return real_read(self, amt)

    monkeypatch.setattr(http.client.HTTPResponse, "read", read)
    dest, out = tmp_path / "eof.bin", io.StringIO()
    download([https_file_server.url("eof.bin")], dest, _expected(), stream=out)
    assert dest.read_bytes() == BODY
    assert "the TLS connection was closed abruptly" in out.getvalue()


def test_untrusted_certificate_is_named(
    https_file_server: FileServer, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    https_file_server.files["/x.bin"] = Served(BODY)
    with pytest.raises(DownloadError, match="certificate could not be verified"):
        download(
            [https_file_server.url("x.bin")], tmp_path / "x", _expected(), stream=io.StringIO()
        )


def test_two_runs_download_one_file_once(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/slow.bin"] = Served(BODY, chunk_delay_s=0.01)
    dest = tmp_path / "slow.bin"
    outs = [io.StringIO(), io.StringIO()]
    errors: list[BaseException] = []

    def run(out: io.StringIO) -> None:
        try:
            download([file_server.url("slow.bin")], dest, _expected(), stream=out)
        except BaseException as exc:  # reported below
            errors.append(exc)

    before = len(file_server.requests)
    threads = [threading.Thread(target=run, args=(out,)) for out in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert dest.read_bytes() == BODY and not (tmp_path / "slow.bin.part").exists()
    assert sum("another download of slow.bin is in progress" in o.getvalue() for o in outs) == 1
    assert len(file_server.requests) - before == 1  # the second run used the first one's file


def test_a_stalled_other_download_is_reported(tmp_path: Path, monkeypatch) -> None:
    part = tmp_path / "stuck.bin.part"
    monkeypatch.setattr(part_lock, "POLL_S", 0.01)
    monkeypatch.setattr(part_lock, "STALL_S", 0.05)
    held = part_lock.part_lock(part, io.StringIO())  # another run's
    with held, pytest.raises(DownloadError, match="no progress for 0 s"):
        download(
            ["http://127.0.0.1:1/stuck.bin"],
            tmp_path / "stuck.bin",
            _expected(),
            stream=io.StringIO(),
        )


def test_content_range_mismatch_keeps_the_partial_file(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["/liar/r.bin"] = Served(BODY, content_range_from=0)
    file_server.files["/good/r.bin"] = Served(BODY)
    dest = tmp_path / "r.bin"
    (tmp_path / "r.bin.part").write_bytes(BODY[:1000])
    urls = [file_server.url("liar/r.bin"), file_server.url("good/r.bin")]
    download(urls, dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY
    assert ("/good/r.bin", "bytes=1000-") in file_server.requests  # the 1000 bytes were kept


def test_resume_sends_if_range_and_a_changed_file_restarts(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["/tag.bin"] = Served(BODY, cut_once=True, etag='"v1"')
    dest = tmp_path / "tag.bin"
    download([file_server.url("tag.bin")], dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY
    assert file_server.if_ranges[-1] == '"v1"'
    # a partial file of version 1 from an earlier run; the server now has version 2, so the
    # If-Range makes it send the whole file (appending to version 1 would fail the hash)
    new = BODY[::-1]
    file_server.files["/tag.bin"] = Served(new, etag='"v2"')
    dest.unlink()
    (tmp_path / "tag.bin.part").write_bytes(BODY[:500])
    (tmp_path / "tag.bin.part.json").write_text(json.dumps({file_server.url("tag.bin"): '"v1"'}))
    download([file_server.url("tag.bin")], dest, _expected(new), stream=io.StringIO())
    assert dest.read_bytes() == new
    assert file_server.if_ranges[-1] == '"v1"'


def test_writes_stop_at_the_expected_size(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/big.bin"] = Served(BODY + b"more" * 1000)
    with pytest.raises(DownloadError, match="more than the expected"):
        download(
            [file_server.url("big.bin")], tmp_path / "big.bin", _expected(), stream=io.StringIO()
        )
    assert not (tmp_path / "big.bin.part").exists()


def test_a_stream_past_the_expected_size_is_cut_and_not_kept(
    file_server: FileServer, tmp_path: Path
) -> None:
    """No Content-Length (chunked): the writes stop at the size, and the next mirror starts
    from nothing rather than from the oversized stream's bytes."""
    file_server.files["/chunked/c.bin"] = Served(BODY + b"more" * 1000, chunked=True)
    file_server.files["/good/c.bin"] = Served(BODY)
    dest, out = tmp_path / "c.bin", io.StringIO()
    urls = [file_server.url("chunked/c.bin"), file_server.url("good/c.bin")]
    download(urls, dest, _expected(), stream=out)
    assert dest.read_bytes() == BODY
    assert ("/good/c.bin", None) in file_server.requests  # started over
