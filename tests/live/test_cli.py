"""The offline command users run: goldens reproduced to one grey level, bad input handled."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from live.cli import main
from tests.conftest import ROOT, Golden


def _write_png(path: Path, image: np.ndarray) -> None:
    rgb = np.round(image * 255).astype(np.uint8) if image.dtype != np.uint8 else image
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _read_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _golden_pngs(
    golden: Golden, folder: Path, frames: int | None = None
) -> tuple[Golden, Path, Path]:
    """The golden's source and its first ``frames`` driving frames (all by default) as PNGs."""
    avatar = folder / "avatar.png"
    _write_png(avatar, golden.arrays["source"])
    driving = folder / "driving"
    driving.mkdir()
    for i, frame in enumerate(golden.arrays["driving"][:frames]):
        _write_png(driving / f"frame{i:03d}.png", frame)
    return golden, avatar, driving


@pytest.fixture
def golden_files(golden: Golden, tmp_path: Path) -> tuple[Golden, Path, Path]:
    """The golden's source and driving frames written as PNGs."""
    return _golden_pngs(golden, tmp_path)


def _args(golden: Golden, avatar: Path, driving: Path | str, output: Path, *extra: str) -> list:
    """Flags of an offline run; without the watermark, as these tests compare the network's
    output with the goldens (tests/live/test_marking.py covers the marked default)."""
    backend = [] if "--backend" in extra else ["--backend", "torch"]
    return [
        "--no-watermark",
        "--avatar",
        str(avatar),
        "--input",
        str(driving),
        "--output",
        str(output),
        "--checkpoint",
        str(golden.checkpoint),
        "--config",
        str(golden.config),
        "--resolution",
        str(golden.resolution),
        "--no-crop",
        *backend,
        *extra,
    ]


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        ((), "prediction"),
        (("--absolute",), "kp_abs_prediction"),
        (("--backend", "onnxruntime"), "prediction"),
        (("--backend", "onnxruntime", "--absolute"), "kp_abs_prediction"),
    ],
    ids=["relative", "absolute", "onnxruntime-relative", "onnxruntime-absolute"],
)
def test_offline_run_reproduces_golden(
    golden_files, tmp_path: Path, monkeypatch, flags, key
) -> None:
    golden, avatar, driving = golden_files
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))  # a fresh engine cache
    out = tmp_path / "out"
    assert main(_args(golden, avatar, driving, out, *flags)) == 0
    expected = np.round(golden.arrays[key] * 255)
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{i:06d}.png" for i in range(len(expected))]
    for path, frame in zip(written, expected, strict=True):
        assert np.abs(_read_png(path).astype(int) - frame).max() <= 1


def test_offline_run_to_video(tiny_golden: Golden, tmp_path: Path) -> None:
    avatar = tmp_path / "avatar.png"
    _write_png(avatar, tiny_golden.arrays["source"])
    driving = tmp_path / "driving"
    driving.mkdir()
    for i, frame in enumerate(tiny_golden.arrays["driving"]):
        _write_png(driving / f"{i}.png", frame)
    video = tmp_path / "result.mp4"
    assert main(_args(tiny_golden, avatar, driving, video)) == 0
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == len(tiny_golden.arrays["driving"])


def test_no_adapt_scale_changes_the_result(golden_files, tmp_path: Path) -> None:
    golden, avatar, driving = golden_files
    assert main(_args(golden, avatar, driving, tmp_path / "a")) == 0
    assert main(_args(golden, avatar, driving, tmp_path / "b", "--no-adapt-scale")) == 0
    a = _read_png(tmp_path / "a" / "000001.png").astype(int)
    b = _read_png(tmp_path / "b" / "000001.png").astype(int)
    assert np.abs(a - b).max() > 0


# --- bad input: a clear message and a non-zero exit, never a traceback ---------------------


@pytest.fixture
def tiny_files(tiny_golden: Golden, tmp_path: Path) -> tuple[Golden, Path, Path]:
    """Two driving frames of the tiny golden: enough to reach every input check."""
    return _golden_pngs(tiny_golden, tmp_path, frames=2)


def _fails(args: list, capsys, *phrases: str, code: int = 2) -> str:
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for phrase in phrases:
        assert phrase in err, err
    return err


def _with(args: list, flag: str, value: str) -> list:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_missing_checkpoint(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = tiny_files
    args = _with(_args(golden, avatar, driving, tmp_path / "o"), "--checkpoint", "nope.pth.tar")
    _fails(args, capsys, "nope.pth.tar does not exist", "vox-adv-cpk.pth.tar", "--checkpoint")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (random.Random(0).randbytes(10_000), "not a PyTorch checkpoint"),
        (b"<!DOCTYPE html>\n<html><body>Virus scan warning</body></html>", "web page"),
    ],
    ids=["random-bytes", "html-page"],
)
def test_file_that_is_not_a_checkpoint(tiny_files, tmp_path, capsys, content, phrase) -> None:
    golden, avatar, driving = tiny_files
    bad = tmp_path / "vox-cpk.pth.tar"
    bad.write_bytes(content)
    args = _with(_args(golden, avatar, driving, tmp_path / "o"), "--checkpoint", str(bad))
    _fails(args, capsys, phrase)


class _Payload:
    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = tiny_files
    payload = _Payload()
    payload.marker = tmp_path / "code-ran"
    bad = tmp_path / "evil.pth.tar"
    torch.save({"generator": payload, "kp_detector": {}}, bad)
    args = _with(_args(golden, avatar, driving, tmp_path / "o"), "--checkpoint", str(bad))
    _fails(args, capsys, "could run code")
    assert not payload.marker.exists()


def test_checkpoint_that_does_not_fit_the_config(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = tiny_files
    args = _with(_args(golden, avatar, driving, tmp_path / "o"), "--config", "vox-256")
    args = _with(args, "--resolution", "256")
    _fails(args, capsys, "does not fit the config 'vox-256'", "checkpoint has [", "expects [")


def test_missing_avatar(tiny_files, tmp_path: Path, capsys) -> None:
    golden, _, driving = tiny_files
    _fails(_args(golden, tmp_path / "me.png", driving, tmp_path / "o"), capsys, "does not exist")


def test_unreadable_avatar(tiny_files, tmp_path: Path, capsys) -> None:
    golden, _, driving = tiny_files
    avatar = tmp_path / "broken.jpg"
    avatar.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    _fails(_args(golden, avatar, driving, tmp_path / "o"), capsys, "broken.jpg")


def test_empty_driving_folder(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, _ = tiny_files
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(_args(golden, avatar, empty, tmp_path / "o"), capsys, "contains no images")


def test_unreadable_driving_video(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, _ = tiny_files
    video = tmp_path / "clip.mp4"
    video.write_bytes(random.Random(1).randbytes(5000))
    _fails(_args(golden, avatar, video, tmp_path / "o"), capsys, "clip.mp4")


def test_missing_driving_input(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, _ = tiny_files
    _fails(_args(golden, avatar, tmp_path / "nothing.mp4", tmp_path / "o"), capsys, "nothing.mp4")


def test_output_that_cannot_be_written(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = tiny_files
    blocker = tmp_path / "file.txt"
    blocker.write_text("in the way")
    for output in (blocker / "frames", blocker / "clip.mp4"):
        _fails(_args(golden, avatar, driving, output), capsys, "Cannot", "--output")


def test_unsupported_output_suffix(tiny_files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = tiny_files
    _fails(_args(golden, avatar, driving, tmp_path / "out.png"), capsys, "Unsupported output")


def test_command_line_errors_have_no_traceback(tmp_path: Path) -> None:
    """The real entry point: exit status 2 and a message, no Python traceback."""
    avatar = tmp_path / "a.png"
    _write_png(avatar, np.zeros((64, 64, 3), np.uint8))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_live.py"),
            "--avatar",
            str(avatar),
            "--input",
            str(tmp_path),
            "--output",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tmp_path / "missing.pth.tar"),
            "--no-crop",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
