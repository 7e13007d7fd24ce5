"""Checkpoint loading: official layout, safety, and messages for every kind of bad file."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from export.checkpoint import CheckpointError, load_model, read_checkpoint
from export.config import PRESETS, load_config
from export.model import FOMM
from tests.conftest import Golden


def test_loads_golden_on_cpu(tiny_golden: Golden) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    model = load_model(tiny_golden.checkpoint, config)
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.gpu
def test_loads_golden_on_gpu(tiny_golden: Golden) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    config = load_config(tiny_golden.config, resolution=64)
    model = load_model(tiny_golden.checkpoint, config, device="cuda")
    assert next(model.parameters()).is_cuda


def test_dataparallel_prefix_and_extra_entries(tiny_golden: Golden, tmp_path: Path) -> None:
    states = read_checkpoint(tiny_golden.checkpoint)
    wrapped = {
        "generator": {f"module.{k}": v for k, v in states["generator"].items()},
        "kp_detector": {f"module.{k}": v for k, v in states["kp_detector"].items()},
        "discriminator": {"x": torch.zeros(1)},
        "epoch": 99,
    }
    path = tmp_path / "dp.pth.tar"
    torch.save(wrapped, path)
    config = load_config(tiny_golden.config, resolution=64)
    model = load_model(path, config)
    reference = load_model(tiny_golden.checkpoint, config)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_legacy_serialization_format(tiny_golden: Golden, tmp_path: Path) -> None:
    """The official files were written by PyTorch 1.0 in the legacy (non-zip) format."""
    path = tmp_path / "legacy.pth.tar"
    torch.save(read_checkpoint(tiny_golden.checkpoint), path, _use_new_zipfile_serialization=False)
    load_model(path, load_config(tiny_golden.config, resolution=64))


def test_missing_checkpoint_says_where_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "vox-adv-cpk.pth.tar")
    message = str(info.value)
    assert "does not exist" in message
    assert "vox-adv-cpk.pth.tar" in message and "8a45a24037871c045fbb8a6a8aa95ebc" in message
    assert "--checkpoint" in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (random.Random(0).randbytes(4096), "not a PyTorch checkpoint"),
        # Random bytes that happen to open like a pickle must not reach the unpickler either.
        (b"\x80\x04" + random.Random(1).randbytes(4094), "not a PyTorch checkpoint"),
        (b"<!DOCTYPE html><html><head><title>Google Drive</title>", "web page"),
        (b"", "empty"),
        (b"PK\x03\x04" + random.Random(2).randbytes(2000), "could not be read"),
    ],
    ids=["random-bytes", "pickle-like-bytes", "html", "empty", "truncated-zip"],
)
def test_files_that_are_not_checkpoints(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "vox-cpk.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_never_run(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    _RunsCode.marker = marker
    path = tmp_path / "evil.pth.tar"
    torch.save(
        {"generator": _RunsCode(), "kp_detector": {}},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _RunsCode.marker = marker
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_without_generator(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth.tar"
    torch.save({"kp_detector": {}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no 'generator'"):
        read_checkpoint(path)


def test_checkpoint_for_another_config_names_keys(tiny_golden: Golden) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model(tiny_golden.checkpoint, load_config("vox-256"))
    message = str(info.value)
    assert "does not fit the config 'vox-256'" in message
    assert "checkpoint has [" in message and "config expects [" in message
    assert "--config" in message


def test_mismatch_suggests_the_fitting_preset(tmp_path: Path) -> None:
    """An mgif checkpoint loaded with the default config points at --config mgif-256."""
    with torch.device("meta"):
        shapes = FOMM(PRESETS["mgif-256"])
    state = {
        part: {k: torch.zeros(v.shape) for k, v in getattr(shapes, part).state_dict().items()}
        for part in ("generator", "kp_detector")
    }
    path = tmp_path / "mgif-cpk.pth.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="--config mgif-256"):
        load_model(path, load_config("vox-256"))
    load_model(path, load_config("mgif-256"))
