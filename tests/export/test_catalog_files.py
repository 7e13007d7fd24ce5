"""Catalog files on disk: one file name per entry, a local file is an entry only when its size
and hash match (hashed once), --checkpoint-url never replaces a catalog file, the licence
reported is the one of the file used, and unknown names and insecure catalogs are refused."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pytest

from export import local_files
from export.catalog import BUILTIN, load_catalog
from export.errors import CheckpointError
from export.obtain import obtain_checkpoint
from tests.fileserver import FileServer, Served

FREE = random.Random(1).randbytes(5000)  # the "official" weights of the test catalog
NC = random.Random(2).randbytes(3000)  # a repackaging under a non-commercial licence


def _entry(name: str, body: bytes, licence: str, md5_only: bool = False) -> dict:
    entry = {
        "name": name,
        "file": f"{name}.pth.tar",
        "config": "vox-256",
        "licence": licence,
        "urls": [f"http://127.0.0.1:1/{name}.pth.tar"],
    }
    if md5_only:  # like avatarify's: no size, no sha256
        entry["md5"] = hashlib.md5(body).hexdigest()
    else:
        entry |= {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return entry


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """An empty home, run from an empty folder, with a catalog of a free and an NC entry."""
    catalog = tmp_path / "catalog.json"
    entries = [_entry("free", FREE, "MIT test"), _entry("nc", NC, "NC test", md5_only=True)]
    catalog.write_text(json.dumps({"checkpoints": entries}))
    monkeypatch.setenv("AVATARCAM_CATALOG", str(catalog))
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AVATARCAM_MIRROR", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "home" / "checkpoints").mkdir(parents=True)
    return tmp_path / "home"


def test_builtin_entries_have_their_own_file_names() -> None:
    files = [entry.file for entry in BUILTIN]
    assert len(set(files)) == len(files), files
    avatarify = next(e for e in BUILTIN if e.name == "vox-adv-256-avatarify")
    assert avatarify.file != "vox-adv-cpk.pth.tar" and "NC" in avatarify.licence


def test_catalog_with_a_shared_file_name_is_refused(tmp_path: Path, monkeypatch) -> None:
    one, two = _entry("one", FREE, "a"), _entry("two", NC, "b")
    two["file"] = one["file"]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"checkpoints": [one, two]}))
    monkeypatch.setenv("AVATARCAM_CATALOG", str(catalog))
    with pytest.raises(CheckpointError, match=r"share the file 'one\.pth\.tar'"):
        load_catalog()


def test_licence_is_the_one_of_the_file_found(home: Path) -> None:
    # an older version saved the NC repackaging under the free entry's file name
    (home / "checkpoints" / "free.pth.tar").write_bytes(NC)
    out = io.StringIO()
    choice = obtain_checkpoint(None, None, interactive=False, stream=out)
    assert choice.entry is not None and choice.entry.name == "nc"
    assert "licence: NC test" in out.getvalue() and "MIT" not in out.getvalue()


def test_local_file_of_the_wrong_size_is_not_the_entry(home: Path) -> None:
    path = home / "checkpoints" / "free.pth.tar"
    path.write_bytes(FREE[:-1])
    with pytest.raises(CheckpointError, match="is not the file of the catalog's free"):
        obtain_checkpoint(Path("free"), None, download=True, stream=io.StringIO())
    assert path.read_bytes() == FREE[:-1]  # never overwritten


def test_local_file_with_a_wrong_hash_is_not_the_entry(home: Path) -> None:
    path = home / "checkpoints" / "free.pth.tar"
    path.write_bytes(bytes(len(FREE)))  # the right size, other bytes
    with pytest.raises(CheckpointError, match="has the name of the catalog's free"):
        obtain_checkpoint(None, None, interactive=False, stream=io.StringIO())


def test_hash_is_computed_once_and_again_after_a_change(home: Path, monkeypatch) -> None:
    path = home / "checkpoints" / "free.pth.tar"
    path.write_bytes(FREE)
    out = io.StringIO()
    assert obtain_checkpoint(Path("free"), None, stream=out).entry.name == "free"
    assert "licence: MIT test" in out.getvalue()

    def no_hashing(path: Path) -> tuple[str, str]:
        raise AssertionError(f"hashed {path} again")

    with monkeypatch.context() as patch:
        patch.setattr(local_files, "digests", no_hashing)
        assert obtain_checkpoint(Path("free"), None, stream=io.StringIO()).checkpoint == path
    path.write_bytes(bytes(len(FREE)))  # same size, new content: hashed again, and refused
    with pytest.raises(CheckpointError, match="is not the file"):
        obtain_checkpoint(Path("free"), None, stream=io.StringIO())


def test_checkpoint_url_never_replaces_a_catalog_file(file_server: FileServer, home: Path) -> None:
    catalog_file = home / "checkpoints" / "free.pth.tar"
    catalog_file.write_bytes(FREE)
    other = b"someone else's weights" * 100
    file_server.files["/x/free.pth.tar"] = Served(other)
    sha = hashlib.sha256(other).hexdigest()
    out = io.StringIO()
    choice = obtain_checkpoint(
        None, None, url=file_server.url("x/free.pth.tar"), sha256=sha, stream=out
    )
    assert catalog_file.read_bytes() == FREE
    assert choice.checkpoint != catalog_file and choice.checkpoint.read_bytes() == other
    assert choice.entry is None and "licence not known" in out.getvalue()


def test_unknown_catalog_name_lists_the_names(home: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        obtain_checkpoint(Path("vox-999"), None, download=True, stream=io.StringIO())
    message = str(info.value)
    assert "vox-999 is not a name in the checkpoint catalog" in message
    assert "free, nc" in message and "does not exist" not in message


def test_unknown_name_in_the_builtin_catalog(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AVATARCAM_CATALOG", raising=False)
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="vox-adv-256, vox-256, vox-adv-256-avatarify"):
        obtain_checkpoint(Path("vox-999"), None, download=True, stream=io.StringIO())


def test_plain_http_catalog_needs_the_flag(
    file_server: FileServer, tmp_path: Path, monkeypatch
) -> None:
    entries = [_entry("served", FREE, "MIT test")]
    file_server.files["/catalog.json"] = Served(json.dumps({"checkpoints": entries}).encode())
    monkeypatch.setenv("AVATARCAM_CATALOG", file_server.url("catalog.json"))
    with pytest.raises(CheckpointError, match=r"plain http.*--allow-insecure-catalog"):
        load_catalog()
    assert [e.name for e in load_catalog(allow_insecure=True)] == ["served"]


def test_every_file_a_catalog_names_needs_a_hash(tmp_path: Path, monkeypatch) -> None:
    entry = _entry("yaml", FREE, "x") | {"config": "yaml.yaml"}
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"checkpoints": [entry]}))
    monkeypatch.setenv("AVATARCAM_CATALOG", str(catalog))
    with pytest.raises(CheckpointError, match="needs its config_sha256"):
        load_catalog()
    entry["config_sha256"] = hashlib.sha256(b"yaml").hexdigest()
    catalog.write_text(json.dumps({"checkpoints": [entry]}))
    assert load_catalog()[0].config_sha256 == entry["config_sha256"]
