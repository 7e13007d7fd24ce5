"""From no checkpoint to animated frames: the command downloads a checkpoint served by a local
HTTP server (by URL and sha256, or from a catalog), verifies it and runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from live.cli import main
from tests.conftest import Golden
from tests.fileserver import FileServer, Served
from tests.live.test_cli import _golden_pngs


@pytest.fixture
def fresh(tiny_golden: Golden, tmp_path: Path, monkeypatch) -> tuple[Golden, Path, Path, Path]:
    """The tiny golden's frames, an empty home (no checkpoint anywhere), no catalog override."""
    home = tmp_path / "home"
    monkeypatch.setenv("AVATARCAM_HOME", str(home))
    monkeypatch.delenv("AVATARCAM_CATALOG", raising=False)
    monkeypatch.delenv("AVATARCAM_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    golden, avatar, driving = _golden_pngs(tiny_golden, tmp_path, frames=3)
    return golden, avatar, driving, home


def _base(avatar: Path, driving: Path, out: Path) -> list[str]:
    return ["--avatar", str(avatar), "--input", str(driving), "--output", str(out), "--no-crop"]


def _serve_golden(server: FileServer, golden: Golden) -> tuple[str, str]:
    body = golden.checkpoint.read_bytes()
    server.files["/models/tiny64.pth.tar"] = Served(body)
    return server.url("models/tiny64.pth.tar"), hashlib.sha256(body).hexdigest()


def test_checkpoint_url_downloads_and_runs(file_server: FileServer, fresh, capsys) -> None:
    golden, avatar, driving, home = fresh
    url, sha = _serve_golden(file_server, golden)
    args = [*_base(avatar, driving, Path("out")), "--config", str(golden.config)]
    args += ["--resolution", "64", "--checkpoint-url", url, "--checkpoint-sha256", sha]
    assert main(args) == 0
    saved = home / "checkpoints" / "from-url" / sha[:16] / "tiny64.pth.tar"
    assert saved.read_bytes() == golden.checkpoint.read_bytes()
    assert len(list(Path("out").iterdir())) == 3
    err = capsys.readouterr().err
    assert "downloading" in err and "licence not known" in err


def test_checkpoint_url_with_wrong_sha256_leaves_nothing(
    file_server: FileServer, fresh, capsys
) -> None:
    golden, avatar, driving, home = fresh
    url, _ = _serve_golden(file_server, golden)
    args = [*_base(avatar, driving, Path("out")), "--config", str(golden.config)]
    args += ["--checkpoint-url", url, "--checkpoint-sha256", "0" * 64]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "deleted" in err
    assert [p for p in (home / "checkpoints").rglob("*") if p.is_file()] == []
    assert not Path("out").exists()


def _catalog(server: FileServer, golden: Golden, tmp_path: Path) -> Path:
    url, sha = _serve_golden(server, golden)
    config = yaml.safe_load(golden.config.read_text())
    config["dataset_params"] = {"frame_shape": [64, 64, 3]}
    config_text = yaml.safe_dump(config).encode()
    server.files["/models/tiny64.yaml"] = Served(config_text, "application/yaml")
    catalog = tmp_path / "catalog.json"
    entry = {
        "name": "tiny64",
        "file": "tiny64.pth.tar",
        "size": golden.checkpoint.stat().st_size,
        "sha256": sha,
        "config": "tiny64.yaml",
        "config_sha256": hashlib.sha256(config_text).hexdigest(),
        "licence": "random test weights",
        "urls": [url],
    }
    catalog.write_text(json.dumps({"checkpoints": [entry]}))
    return catalog


def test_catalog_download_flag_then_offline_rerun(
    file_server: FileServer, fresh, tmp_path: Path, monkeypatch, capsys
) -> None:
    golden, avatar, driving, home = fresh
    monkeypatch.setenv("AVATARCAM_CATALOG", str(_catalog(file_server, golden, tmp_path)))
    assert main([*_base(avatar, driving, Path("a")), "--download"]) == 0
    assert (home / "checkpoints" / "tiny64.yaml").is_file()  # the config came along
    err = capsys.readouterr().err
    assert "random test weights" in err  # the licence is shown
    assert len(list(Path("a").iterdir())) == 3
    served = len(file_server.requests)
    assert main(_base(avatar, driving, Path("b"))) == 0  # found now: no download
    assert len(file_server.requests) == served


def test_no_terminal_without_download_prints_the_steps(
    file_server: FileServer, fresh, tmp_path: Path, monkeypatch, capsys
) -> None:
    golden, avatar, driving, home = fresh
    monkeypatch.setenv("AVATARCAM_CATALOG", str(_catalog(file_server, golden, tmp_path)))
    assert main(_base(avatar, driving, Path("out"))) == 2  # pytest's stdin is no terminal
    err = capsys.readouterr().err
    assert "--download" in err and file_server.url("models/tiny64.pth.tar") in err
    assert not (home / "checkpoints" / "tiny64.pth.tar").exists()
    assert not Path("out").exists()


def test_unknown_catalog_name_with_download(fresh, capsys) -> None:
    _, avatar, driving, _ = fresh
    args = [*_base(avatar, driving, Path("out")), "--checkpoint", "vox-999", "--download"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "vox-999 is not a name in the checkpoint catalog" in err
    assert "vox-adv-256, vox-256, vox-adv-256-avatarify" in err and "does not exist" not in err
    assert not Path("out").exists()
