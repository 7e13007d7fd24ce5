"""The doctor checks the run its flags describe: a file input, the given checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from live import io_probes
from live.doctor import DoctorOptions, default_probes, render
from live.probes import Check
from tests.conftest import load_golden


def _names(options: DoctorOptions) -> set[str]:
    return {probe.name for probe in default_probes(options)}


def test_a_file_input_probes_no_camera(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    names = _names(DoctorOptions(camera=str(clip)))
    assert "cameras" not in names and "virtual camera" not in names and "input" in names
    assert "virtual camera" in _names(DoctorOptions(camera=str(clip), virtual_camera=True))
    live = _names(DoctorOptions())
    assert {"cameras", "virtual camera"} <= live and "input" not in live


def test_the_file_input_is_opened(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(frames / f"{i:03d}.png"), np.zeros((48, 64, 3), np.uint8))
    (check,) = io_probes.probe_input(str(frames))
    assert check.status == "ok" and "64x48, 3 frames" in check.detail
    (check,) = io_probes.probe_input(str(tmp_path / "missing.mp4"))
    assert check.status == "fail" and "missing.mp4 does not exist" in check.detail


def test_the_verdict_names_the_run_checked(tmp_path: Path) -> None:
    options = DoctorOptions(camera="clip.mp4")
    ok = [Check("Input", "input", "ok", "clip.mp4 opens", None, "input")]
    assert "Verdict: the run from clip.mp4 would work." in render(ok, "v", options.describe())
    bad = [Check("Input", "input", "fail", "no", "pass another --input", "input")]
    text = render(bad, "v", options.describe())
    assert "Verdict: the run from clip.mp4 would NOT work" in text
    assert "webcam" not in text


def test_a_checkpoint_is_loaded_against_its_config(tmp_path: Path) -> None:
    golden = load_golden("vox-small256")
    checkpoint = tmp_path / "small.pth.tar"
    shutil.copyfile(golden.checkpoint, checkpoint)
    (check,) = io_probes.probe_checkpoint(checkpoint)  # the run would use vox-256: no fit
    assert check.status == "fail" and "does not fit the config 'vox-256'" in check.detail
    assert "small.yaml" in check.fix
    (check,) = io_probes.probe_checkpoint(checkpoint, str(golden.config))
    assert check.status == "ok" and "--config" in check.detail
    shutil.copyfile(golden.config, tmp_path / "small.yaml")
    (check,) = io_probes.probe_checkpoint(checkpoint)
    assert check.status == "ok" and "found beside the checkpoint" in check.detail
