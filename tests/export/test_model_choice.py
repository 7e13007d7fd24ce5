"""A checkpoint's own config (beside it, or embedded), and weights checked at load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from export.checkpoint import CheckpointError, check_fit, load_model, read_checkpoint
from export.config import PRESETS, load_config
from export.model import FOMM
from export.model_choice import choose_model, config_beside
from tests.conftest import Golden


def _copy(golden: Golden, folder: Path, name: str, yaml_name: str | None) -> Path:
    folder.mkdir(exist_ok=True)
    checkpoint = folder / name
    shutil.copyfile(golden.checkpoint, checkpoint)
    if yaml_name is not None:
        shutil.copyfile(golden.config, folder / yaml_name)
    return checkpoint


def test_yaml_with_the_same_name_is_used(tiny_golden: Golden, tmp_path: Path) -> None:
    checkpoint = _copy(tiny_golden, tmp_path / "m", "face.pth.tar", "face.yaml")
    (tmp_path / "m" / "other.yaml").write_text("not: a config\n")  # same name wins
    chosen = choose_model(checkpoint, None, resolution=64)
    assert chosen.config.name == "face.yaml" and chosen.config.num_kp == 5
    assert chosen.own and "beside the checkpoint" in chosen.source
    assert str(tmp_path / "m" / "face.yaml") in chosen.source


def test_the_only_yaml_in_the_folder_is_used(tiny_golden: Golden, tmp_path: Path) -> None:
    checkpoint = _copy(tiny_golden, tmp_path / "m", "face.pth", "config-256.yml")
    assert config_beside(checkpoint) == tmp_path / "m" / "config-256.yml"
    assert choose_model(checkpoint, None, 64).config.num_kp == 5
    (tmp_path / "m" / "second.yaml").write_text("x: 1\n")
    assert config_beside(checkpoint) is None  # two candidates: neither is guessed


def test_embedded_config_is_used(tiny_golden: Golden, tmp_path: Path) -> None:
    states = read_checkpoint(tiny_golden.checkpoint)
    path = tmp_path / "solo.pth.tar"
    torch.save({**states, "config": tiny_golden.config.read_text()}, path)
    chosen = choose_model(path, None, 64)
    assert chosen.config.num_kp == 5 and "embedded in solo.pth.tar" in chosen.source


def test_without_any_config_the_default_is_named(tiny_golden: Golden, tmp_path: Path) -> None:
    checkpoint = _copy(tiny_golden, tmp_path / "m", "face.pth.tar", None)
    with pytest.raises(CheckpointError) as info:
        choose_model(checkpoint, None)
    message = str(info.value)
    assert "does not fit the config 'vox-256' (the default preset vox-256" in message
    assert "None of the built-in presets" in message and "face.yaml" in message


def test_explicit_config_mismatch_names_the_yaml_beside(tiny_golden: Golden, tmp_path) -> None:
    checkpoint = _copy(tiny_golden, tmp_path / "m", "face.pth.tar", "face.yaml")
    with pytest.raises(CheckpointError) as info:
        choose_model(checkpoint, "vox-256")
    assert f"pass --config {tmp_path / 'm' / 'face.yaml'}" in str(info.value)


def test_mismatch_names_the_preset_that_fits() -> None:
    with torch.device("meta"):
        model = FOMM(PRESETS["mgif-256"])
    states = {
        "generator": model.generator.state_dict(),
        "kp_detector": model.kp_detector.state_dict(),
    }
    with pytest.raises(CheckpointError) as info:
        check_fit(states, "mgif.pth.tar", PRESETS["vox-256"])
    assert "fits the config 'mgif-256': pass --config mgif-256" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tiny_golden: Golden, tmp_path: Path, bad) -> None:
    states = read_checkpoint(tiny_golden.checkpoint)
    key = next(k for k in states["generator"] if k.endswith("weight"))
    states["generator"][key].view(-1)[3] = bad
    path = tmp_path / "broken.pth.tar"
    torch.save(states, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, load_config(tiny_golden.config, resolution=64))
    message = str(info.value)
    assert f"generator.{key} (1 of" in message and "not finite" in message
    assert "report" not in message


def test_huge_finite_weights_are_not_refused(tiny_golden: Golden) -> None:
    from export.checkpoint import checkpoint_states

    states = read_checkpoint(tiny_golden.checkpoint)
    key = next(k for k in states["generator"] if k.endswith("weight"))
    states["generator"][key].view(-1)[:2] = 3e38  # their sum overflows; each is finite
    assert checkpoint_states(states, "big.pth.tar")["generator"][key].view(-1)[0] == 3e38
