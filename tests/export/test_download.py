"""Checkpoint download against a local HTTP server: verified, resumed, and every failure with
a message that says what to do."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pytest

from export import download as download_module
from export.catalog import BUILTIN, load_catalog, mirror_urls
from export.download import DownloadError, Expected, download
from export.errors import CheckpointError
from export.obtain import obtain_checkpoint
from tests.fileserver import FileServer, Served

BODY = random.Random(7).randbytes(3 * download_module.CHUNK + 12345)
SHA = hashlib.sha256(BODY).hexdigest()


def _expected(body: bytes = BODY) -> Expected:
    return Expected(size=len(body), sha256=hashlib.sha256(body).hexdigest())


def test_downloads_and_verifies(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/ok.bin"] = Served(BODY)
    dest = tmp_path / "ok.bin"
    out = io.StringIO()
    assert download([file_server.url("ok.bin")], dest, _expected(), stream=out) == dest
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "ok.bin.part").exists()
    assert "100%" in out.getvalue()  # the progress report reached the end


def test_checksum_mismatch_leaves_no_file(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/tampered.bin"] = Served(BODY[:-1] + b"!")
    dest = tmp_path / "tampered.bin"
    with pytest.raises(DownloadError, match=r"does not match \(its sha256 is .*deleted"):
        download([file_server.url("tampered.bin")], dest, _expected(), stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_range(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/cut.bin"] = Served(BODY, cut_once=True)
    dest = tmp_path / "cut.bin"
    out = io.StringIO()
    download([file_server.url("cut.bin")], dest, _expected(), stream=out)
    assert dest.read_bytes() == BODY
    ranges = [r for p, r in file_server.requests if p == "/cut.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(BODY) // 2}-", ranges
    assert "resuming" in out.getvalue()


def test_partial_file_from_an_earlier_run_is_resumed(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["/again.bin"] = Served(BODY)
    dest = tmp_path / "again.bin"
    (tmp_path / "again.bin.part").write_bytes(BODY[:1000])
    download([file_server.url("again.bin")], dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY
    assert ("/again.bin", "bytes=1000-") in file_server.requests


def test_server_that_ignores_range_restarts(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/norange.bin"] = Served(BODY, honour_range=False)
    dest = tmp_path / "norange.bin"
    (tmp_path / "norange.bin.part").write_bytes(b"x" * 1000)  # stale bytes must not survive
    download([file_server.url("norange.bin")], dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY


def test_not_found(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.url("missing.bin")
    with pytest.raises(DownloadError) as info:
        download([url], tmp_path / "missing.bin", _expected(), stream=io.StringIO())
    assert "was not found (HTTP 404)" in str(info.value)
    assert f"download {url} with a browser or curl" in str(info.value)


def test_html_page_instead_of_the_file(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/portal.bin"] = Served(b"<html>Sign in</html>", "text/html; charset=utf-8")
    with pytest.raises(DownloadError, match="returned a web page"):
        download(
            [file_server.url("portal.bin")], tmp_path / "p.bin", _expected(), stream=io.StringIO()
        )
    assert list(tmp_path.iterdir()) == []


def test_no_network(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"Could not connect .*refused"):
        download(
            [f"http://127.0.0.1:{port}/x.bin"], tmp_path / "x", _expected(), stream=io.StringIO()
        )


def test_full_disk(file_server: FileServer, tmp_path: Path, monkeypatch) -> None:
    file_server.files["/big.bin"] = Served(BODY)
    monkeypatch.setattr(download_module, "_free_bytes", lambda folder: 1000)
    with pytest.raises(DownloadError, match=r"Not enough disk space.*AVATARCAM_HOME"):
        download([file_server.url("big.bin")], tmp_path / "b", _expected(), stream=io.StringIO())


def test_disk_full_while_writing(file_server: FileServer, tmp_path: Path, monkeypatch) -> None:
    import errno

    file_server.files["/enospc.bin"] = Served(BODY)
    real_open = Path.open

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(self, mode="r", *args, **kwargs):
        return (
            Full()
            if self.name.endswith(".part") and "b" in mode and mode != "rb"
            else (real_open(self, mode, *args, **kwargs))
        )

    monkeypatch.setattr(Path, "open", fake_open)
    with pytest.raises(DownloadError, match="The disk is full"):
        download([file_server.url("enospc.bin")], tmp_path / "e", _expected(), stream=io.StringIO())


def test_next_mirror_after_a_failure(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["/second.bin"] = Served(BODY)
    dest = tmp_path / "second.bin"
    urls = [file_server.url("gone.bin"), file_server.url("second.bin")]
    download(urls, dest, _expected(), stream=io.StringIO())
    assert dest.read_bytes() == BODY


# --- the catalog and finding a checkpoint ----------------------------------------------------


def test_builtin_catalog_facts() -> None:
    names = {entry.name: entry for entry in BUILTIN}
    assert {"vox-adv-256", "vox-256"} <= set(names)
    adv = names["vox-adv-256"]
    assert adv.size == 750_926_934 and adv.sha256.startswith("6792d681")
    assert len(adv.urls) > 1 and adv.config == "vox-adv-256" and "MIT" in adv.licence
    assert names["vox-256"].size == 728_766_691
    assert "NC" in names["vox-adv-256-avatarify"].licence


def _catalog(file_server: FileServer, tmp_path: Path, body: bytes = BODY) -> Path:
    file_server.files["/mirror/small.pth.tar"] = Served(body)
    catalog = tmp_path / "catalog.json"
    entry = {
        "name": "small",
        "file": "small.pth.tar",
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "config": "vox-256",
        "licence": "test licence",
        "urls": [file_server.url("mirror/small.pth.tar")],
    }
    catalog.write_text(json.dumps({"checkpoints": [entry]}))
    return catalog


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no ./checkpoints
    return tmp_path / "home"


def test_without_terminal_and_without_download_prints_the_steps(
    file_server: FileServer, tmp_path: Path, home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AVATARCAM_CATALOG", str(_catalog(file_server, tmp_path)))
    with pytest.raises(CheckpointError) as info:
        obtain_checkpoint(None, None, interactive=False, stream=io.StringIO())
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "--download" in message and "test licence" in message
    assert file_server.url("mirror/small.pth.tar") in message
    assert not (home / "checkpoints" / "small.pth.tar").exists()


def test_download_flag_fetches_without_asking(
    file_server: FileServer, tmp_path: Path, home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AVATARCAM_CATALOG", str(_catalog(file_server, tmp_path)))

    def no_questions(prompt: str) -> str:
        raise AssertionError("asked")

    choice = obtain_checkpoint(None, None, download=True, ask=no_questions, stream=io.StringIO())
    assert choice.checkpoint == home / "checkpoints" / "small.pth.tar"
    assert choice.checkpoint.read_bytes() == BODY and choice.downloaded
    # the next run finds it without the network
    again = obtain_checkpoint(None, None, interactive=False, stream=io.StringIO())
    assert again.checkpoint == choice.checkpoint and not again.downloaded


@pytest.mark.parametrize(("answer", "downloads"), [("", True), ("y", True), ("n", False)])
def test_terminal_asks_once(
    file_server: FileServer, tmp_path: Path, home: Path, monkeypatch, answer, downloads
) -> None:
    monkeypatch.setenv("AVATARCAM_CATALOG", str(_catalog(file_server, tmp_path)))
    prompts: list[str] = []
    out = io.StringIO()

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return answer

    if downloads:
        obtain_checkpoint(None, None, interactive=True, ask=ask, stream=out)
    else:
        with pytest.raises(CheckpointError, match="Not downloaded"):
            obtain_checkpoint(None, None, interactive=True, ask=ask, stream=out)
    assert len(prompts) == 1
    shown = out.getvalue()
    assert "small.pth.tar" in shown and "test licence" in shown and str(home) in shown
    assert (home / "checkpoints" / "small.pth.tar").exists() == downloads


def test_mirror_variable_is_tried_first(monkeypatch) -> None:
    monkeypatch.delenv("AVATARCAM_CATALOG", raising=False)
    monkeypatch.setenv("AVATARCAM_MIRROR", "http://mirror.local/fomm/")
    entry = load_catalog()[0]
    urls = mirror_urls(entry)
    assert urls[0] == f"http://mirror.local/fomm/{entry.file}" and urls[1:] == list(entry.urls)


def test_checkpoint_url_needs_a_sha256(home: Path) -> None:
    with pytest.raises(CheckpointError, match="--checkpoint-sha256"):
        obtain_checkpoint(None, None, url="http://127.0.0.1:1/x.pth.tar", stream=io.StringIO())


def test_bad_catalog_is_named(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text('{"checkpoints": [{"name": "x", "file": "x", "config": "vox-256"}]}')
    monkeypatch.setenv("AVATARCAM_CATALOG", str(bad))
    with pytest.raises(CheckpointError, match="lacks urls"):
        load_catalog()


def test_explicit_checkpoint_file_needs_no_catalog(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AVATARCAM_CATALOG", "http://127.0.0.1:1/unreachable.json")
    mine = tmp_path / "mine.pth.tar"
    mine.write_bytes(b"x")
    choice = obtain_checkpoint(mine, None, interactive=False, stream=io.StringIO())
    assert choice.checkpoint == mine and choice.config == "vox-256"
