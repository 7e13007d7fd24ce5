"""A newcomer's first runs: the checkpoint's own config, one clear message for a bad one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from export.checkpoint import read_checkpoint
from live.cli import main
from tests.conftest import Golden
from tests.live.test_cli import _golden_pngs


@pytest.fixture
def first_run(tiny_golden: Golden, tmp_path: Path, monkeypatch) -> tuple[list[str], Path]:
    """Flags of an offline run of the tiny golden without --config, and the model folder."""
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    _, avatar, driving = _golden_pngs(tiny_golden, tmp_path, frames=2)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(tiny_golden.checkpoint, models / "face.pth.tar")
    args = ["--avatar", str(avatar), "--input", str(driving), "--output", str(tmp_path / "out")]
    args += ["--checkpoint", str(models / "face.pth.tar"), "--resolution", "64", "--no-crop"]
    return args, models


def test_yaml_beside_the_checkpoint_is_used_and_named(
    first_run, tiny_golden: Golden, tmp_path: Path, capsys
) -> None:
    args, models = first_run
    shutil.copyfile(tiny_golden.config, models / "face.yaml")
    assert main([*args, "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert f"model config: {models / 'face.yaml'}, found beside the checkpoint" in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_a_config_that_does_not_fit_is_one_message_before_any_export(first_run, capsys) -> None:
    args, _ = first_run  # no YAML beside it: the default vox-256 does not fit
    args = [a if a != "64" else "256" for a in args]
    assert main(args) == 2  # --backend auto: would export to ONNX and race the CPU backends
    err = capsys.readouterr().err
    assert err.startswith("error: Checkpoint "), err
    assert err.count("mismatched keys") == 1
    assert "exporting" not in err and "could not measure" not in err
    assert "face.yaml" in err  # where to put its config


def test_nan_weights_are_an_error_not_a_black_video(
    first_run, tiny_golden: Golden, tmp_path: Path, capsys
) -> None:
    args, models = first_run
    states = read_checkpoint(models / "face.pth.tar")
    key = next(iter(states["kp_detector"]))
    states["kp_detector"][key].fill_(float("nan"))
    torch.save(states, models / "face.pth.tar")
    assert main([*args, "--config", str(tiny_golden.config), "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Checkpoint ")
    assert f"kp_detector.{key}" in err and "not finite" in err and "report" not in err
    assert not list((tmp_path / "out").glob("*.png"))
