"""Small messages a newcomer meets: each says what is true, once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from export.catalog import CATALOG_ENV
from export.download import DownloadError
from export.obtain import obtain_checkpoint
from live.cli import build_parser, main
from tests.fileserver import FileServer


def test_verify_an_empty_folder_says_it_has_no_images(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", f"{empty}/"]) == 2
    out = capsys.readouterr().out
    assert "a folder with no images in it (.png" in out and "no such file" not in out
    assert main(["verify", str(tmp_path / "missing.png")]) == 2
    assert "no such file" in capsys.readouterr().out


def test_help_shows_the_verify_command() -> None:
    text = build_parser().format_help()
    usage, rest = text.split("\n\n", 1)
    assert "run_live.py verify FILE..." in usage
    commands = rest.split("commands:\n", 1)[1]
    assert commands.startswith("  verify FILE...") and "Content Credentials" in commands


def test_a_failed_download_gives_the_manual_steps_once(
    file_server: FileServer, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    entry = {
        "name": "gone",
        "file": "gone.pth.tar",
        "size": 1000,
        "sha256": "0" * 64,
        "config": "vox-256",
        "licence": "test",
        "urls": [file_server.url("nothing/here.pth.tar")],  # 404
    }
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"checkpoints": [entry]}))
    monkeypatch.setenv(CATALOG_ENV, str(catalog))
    stream = io.StringIO()
    with pytest.raises(DownloadError) as info:
        obtain_checkpoint(Path("gone"), None, download=True, stream=stream)
    said = stream.getvalue() + f"error: {info.value}\n"
    assert "Could not download gone.pth.tar" in said
    assert said.count("by hand") == 1, said
    assert file_server.url("nothing/here.pth.tar") in said
