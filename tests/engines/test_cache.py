"""The engine cache: reuse, invalidation, corruption recovery, locking, checkpoint hashing."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import EngineOptions, create_engine
from engines import cache as cache_mod
from engines.cache import (
    MANIFEST,
    ArtifactCache,
    CacheWarning,
    FileLock,
    default_cache_dir,
    onnx_artifacts,
)
from engines.errors import EngineError
from export import onnx_export
from export.config import load_config
from tests.conftest import Golden

KEY = {"model": "m", "resolution": 64}


class Builder:
    """A fake build step that writes known files and counts its calls."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        for name, data in self.files.items():
            (folder / name).write_bytes(data)


def _get(cache: ArtifactCache, builder: Builder, key: dict = KEY):
    return cache.get_or_build("thing", "label", key, list(builder.files), builder, "test artifact")


def test_entry_is_built_once_and_reused(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    builder = Builder({"a.bin": b"x" * 100, "b.bin": b"y"})
    first = _get(cache, builder)
    mtime = (first.path / "a.bin").stat().st_mtime_ns
    second = _get(cache, builder)
    assert builder.calls == 1 and cache.builds == 1
    assert second.path == first.path
    assert (second.path / "a.bin").stat().st_mtime_ns == mtime
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["key"] == KEY
    assert manifest["files"]["a.bin"] == {
        "size": 100,
        "sha256": hashlib.sha256(b"x" * 100).hexdigest(),
    }


def test_changed_key_selects_a_new_entry(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    builder = Builder({"a.bin": b"x"})
    first = _get(cache, builder)
    second = _get(cache, builder, {**KEY, "resolution": 128})
    assert builder.calls == 2
    assert first.path != second.path and first.path.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:10]), "damaged a.bin"),  # truncated
        (lambda p: p.write_bytes(b"z" * len(p.read_bytes())), "sha256 mismatch"),  # same size
        (lambda p: p.unlink(), "lacks a.bin"),
        (lambda p: (p.parent / MANIFEST).write_text("{not json"), "no readable"),
    ],
    ids=["truncated", "overwritten", "deleted", "bad-manifest"],
)
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path: Path, damage, message: str) -> None:
    cache = ArtifactCache(tmp_path)
    builder = Builder({"a.bin": b"x" * 100})
    entry = _get(cache, builder)
    damage(entry.path / "a.bin")
    with pytest.warns(CacheWarning, match=message):
        again = _get(cache, builder)
    assert builder.calls == 2
    assert (again.path / "a.bin").read_bytes() == b"x" * 100


def test_stale_manifest_key_is_rebuilt(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    builder = Builder({"a.bin": b"x"})
    entry = _get(cache, builder)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    manifest["key"]["model"] = "other"
    (entry.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(CacheWarning, match="stale"):
        _get(cache, builder)
    assert builder.calls == 2


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def broken(folder: Path) -> None:
        (folder / "a.bin").write_bytes(b"half")
        raise RuntimeError("build crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        cache.get_or_build("thing", "label", KEY, ["a.bin"], broken, "test artifact")
    leftovers = [p.name for p in (tmp_path / "thing").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    builder = Builder({"a.bin": b"x"})
    _get(cache, builder)  # no warning: a missing entry is simply built
    assert builder.calls == 1


def test_build_that_forgets_a_file_is_an_error(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(EngineError, match=r"did not write b\.bin"):
        cache.get_or_build("thing", "l", KEY, ["a.bin", "b.bin"], Builder({"a.bin": b""}), "x")


def test_discard_warns_and_forces_a_rebuild(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    builder = Builder({"a.bin": b"x"})
    entry = _get(cache, builder)
    with pytest.warns(CacheWarning, match="could not be used"):
        cache.discard(entry, "deserialization failed", "test artifact")
    assert not entry.path.exists()
    _get(cache, builder)
    assert builder.calls == 2


def test_checkpoint_hash_is_remembered_by_path_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "model.pth.tar"
    checkpoint.write_bytes(b"checkpoint bytes")
    calls = []
    real = cache_mod.file_sha256
    monkeypatch.setattr(cache_mod, "file_sha256", lambda p: calls.append(p) or real(p))
    cache = ArtifactCache(tmp_path / "cache")
    digest = cache.checkpoint_digest(checkpoint)
    assert digest == hashlib.sha256(b"checkpoint bytes").hexdigest()
    assert ArtifactCache(tmp_path / "cache").checkpoint_digest(checkpoint) == digest
    assert len(calls) == 1  # the second start did not hash the file again
    checkpoint.write_bytes(b"other checkpoint bytes")
    assert (
        cache.checkpoint_digest(checkpoint) == hashlib.sha256(b"other checkpoint bytes").hexdigest()
    )
    assert len(calls) == 2


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    from export.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        ArtifactCache(tmp_path).checkpoint_digest(tmp_path / "nope.pth.tar")


def test_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with FileLock(path):
        errors = []

        def contender() -> None:
            try:
                with FileLock(path, timeout=0.3, what="building x"):
                    pass
            except EngineError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
    assert errors and "building x" in errors[0] and str(path) in errors[0]
    with FileLock(path, timeout=0.3):  # released
        pass


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.delenv("AVATARCAM_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "avatarcam" / "cache"
    assert ArtifactCache(tmp_path / "mine").root == tmp_path / "mine"


# --- the ONNX artifacts, keyed by everything that changes them ----------------------------------


@pytest.fixture
def fake_export(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace the (slow) export with one that writes placeholder files and records calls."""
    calls: list[tuple] = []

    def export(model, folder, resolution, batch, precision, verify, filenames):
        # The CPU parity check runs for batch 1 only (minutes per larger batch otherwise).
        assert verify == (batch == 1)
        calls.append((resolution, batch, precision))
        for name in filenames.values():
            (Path(folder) / name).write_bytes(f"{resolution}-{precision}".encode())

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    return calls


@pytest.fixture
def own_checkpoint(tmp_path: Path, tiny_golden: Golden) -> Path:
    path = tmp_path / "tiny64.pth.tar"
    path.write_bytes(tiny_golden.checkpoint.read_bytes())
    return path


def test_onnx_artifacts_reuse_and_invalidation(
    tmp_path: Path, tiny_golden: Golden, own_checkpoint: Path, fake_export: list[tuple]
) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    config = load_config(tiny_golden.config, resolution=64)
    paths, entry = onnx_artifacts(cache, own_checkpoint, config, 64, 1, "fp32")
    assert sorted(paths) == ["avatar", "frame"] and all(p.is_file() for p in paths.values())
    assert len(fake_export) == 1
    onnx_artifacts(cache, own_checkpoint, config, 64, 1, "fp32")
    assert len(fake_export) == 1  # reused

    # Other resolution, batch or precision: another entry.
    config80 = load_config(tiny_golden.config, resolution=80)
    onnx_artifacts(cache, own_checkpoint, config80, 80, 1, "fp32")
    onnx_artifacts(cache, own_checkpoint, config, 64, 2, "fp32")
    onnx_artifacts(cache, own_checkpoint, config, 64, 1, "fp16")
    assert fake_export[1:] == [(80, 1, "fp32"), (64, 2, "fp32"), (64, 1, "fp16")]

    # Changed checkpoint bytes (same path): rebuilt under a new key.
    state = torch.load(own_checkpoint, map_location="cpu", weights_only=True)
    first = next(iter(state["generator"]))
    state["generator"][first] = state["generator"][first] + 1
    torch.save(state, own_checkpoint)
    _, changed = onnx_artifacts(cache, own_checkpoint, config, 64, 1, "fp32")
    assert len(fake_export) == 5 and changed.digest != entry.digest
    # A changed graph source (the exporter's fingerprint) also invalidates.
    real = onnx_export.export_fingerprint()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(onnx_export, "export_fingerprint", lambda: {**real, "graph_sources": "new"})
        onnx_artifacts(cache, own_checkpoint, config, 64, 1, "fp32")
    assert len(fake_export) == 6


# --- real exports: a second start reuses, a truncated ONNX file is rebuilt ------------------------


def test_second_start_reuses_and_truncated_onnx_is_rebuilt(
    tmp_path: Path, tiny_golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    calls = []
    real_export = onnx_export.export_onnx

    def counting_export(*args, **kwargs):
        calls.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", counting_export)
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="onnxruntime", device="cpu", cache_dir=tmp_path)
    source = np.ascontiguousarray(tiny_golden.arrays["source"].transpose(2, 0, 1)[None])
    driving = np.ascontiguousarray(tiny_golden.arrays["driving"][0].transpose(2, 0, 1)[None])
    expected = tiny_golden.arrays["kp_abs_prediction"][0]

    def start_and_check() -> None:
        with create_engine(tiny_golden.checkpoint, config, options) as engine:
            engine.set_avatar(source)
            frame = engine.animate(driving).prediction[0].transpose(1, 2, 0)
            assert np.abs(frame - expected).max() <= 1e-4

    start_and_check()
    assert len(calls) == 1
    onnx_files = sorted((tmp_path / "onnx").glob("*/*.onnx"))
    optimized = sorted((tmp_path / "onnxruntime").glob("*/*.onnx"))
    assert len(onnx_files) == 2 and len(optimized) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in onnx_files + optimized}

    start_and_check()
    assert len(calls) == 1  # nothing exported again
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    frame_onnx = next(p for p in onnx_files if p.name.endswith(".frame.onnx"))
    frame_onnx.write_bytes(frame_onnx.read_bytes()[:1000])
    with pytest.warns(CacheWarning, match="damaged"):
        start_and_check()
    assert len(calls) == 2


# --- an unwritable cache folder (issue 10) ------------------------------------------------------


@pytest.mark.parametrize("how", ["file-in-the-way", "permission-denied"])
def test_unwritable_cache_names_the_folder_and_avatarcam_home(
    tiny_golden: Golden, tmp_path: Path, monkeypatch, how: str
) -> None:
    home = tmp_path / "home"
    if how == "file-in-the-way":
        home.write_text("a file where the cache folder should be")
    else:
        real_mkdir = Path.mkdir

        def denied(self, *args, **kwargs):
            if str(self).startswith(str(home)):
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", denied)
    monkeypatch.setenv("AVATARCAM_HOME", str(home))
    config = load_config(tiny_golden.config, resolution=64)
    with pytest.raises(EngineError) as info:
        create_engine(tiny_golden.checkpoint, config, EngineOptions(backend="onnxruntime"))
    message = str(info.value)
    assert f"{home / 'cache'} cannot be written" in message
    assert "AVATARCAM_HOME" in message and "pip install" not in message


def test_a_failed_build_is_remembered_until_the_key_changes_or_a_retry_is_asked(
    tmp_path: Path,
) -> None:
    from engines.cache import ArtifactCache
    from engines.errors import EngineError

    calls: list[str] = []

    def failing(folder: Path) -> None:
        calls.append("build")
        raise RuntimeError("TensorRT: out of tactics\nmore detail")

    cache = ArtifactCache(tmp_path)
    key = {"tensorrt": "10.9"}
    with pytest.raises(RuntimeError, match="out of tactics"):
        cache.get_or_build("tensorrt", "m", key, ["m.engine"], failing, "TensorRT engine", True)
    with pytest.raises(
        EngineError, match=r"failed on this machine before .*out of tactics.*--remeasure"
    ):
        cache.get_or_build("tensorrt", "m", key, ["m.engine"], failing, "TensorRT engine", True)
    assert calls == ["build"]  # not tried again

    def working(folder: Path) -> None:
        calls.append("build")
        (folder / "m.engine").write_bytes(b"engine")

    # Another version is another key: built. A retry asked for (--remeasure): built.
    cache.get_or_build("tensorrt", "m", {"tensorrt": "10.10"}, ["m.engine"], working, "e", True)
    retry = ArtifactCache(tmp_path, retry_failed=True)
    entry = retry.get_or_build("tensorrt", "m", key, ["m.engine"], working, "e", True)
    assert entry.file("m.engine").read_bytes() == b"engine" and len(calls) == 3
    # Once built, the failure is forgotten.
    assert cache.get_or_build("tensorrt", "m", key, ["m.engine"], failing, "e", True) == entry
    # Without remember_failure, a failure is retried every time (as before).
    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.get_or_build("onnx", "x", key, ["x.onnx"], failing, "ONNX export")
