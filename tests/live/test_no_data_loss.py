"""No silent data loss or wrong result (issue 10, section 2): inputs are never written over,
earlier outputs are never mixed with new ones, failed runs leave nothing behind, and runs whose
result is probably wrong say so."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import live.app
from live.cli import main
from live.progress import Progress
from tests.conftest import ROOT, Golden, shared_path
from tests.live.test_cli import _args, _golden_pngs, _with, _write_png


@pytest.fixture
def files(tiny_golden: Golden, tmp_path: Path, monkeypatch) -> tuple[Golden, Path, Path]:
    """Three driving frames of the tiny golden, a fresh engine cache."""
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    return _golden_pngs(tiny_golden, tmp_path, frames=3)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _video_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# --- outputs never written over inputs -------------------------------------------------------


@pytest.mark.parametrize("where", ["input-folder", "inside-input", "avatar-file", "avatar-folder"])
def test_output_over_an_input_is_refused(files, tmp_path: Path, capsys, where) -> None:
    golden, avatar, driving = files
    output = {
        "input-folder": driving,
        "inside-input": driving / "out",
        "avatar-file": avatar,
        "avatar-folder": avatar.parent,
    }[where]
    before = _snapshot(driving), avatar.read_bytes()
    assert main(_args(golden, avatar, driving, output)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and "input" in err, err
    assert (_snapshot(driving), avatar.read_bytes()) == before
    assert not (driving / "out").exists()


def test_non_empty_output_folder_is_refused(files, tmp_path: Path, capsys) -> None:
    golden, avatar, driving = files
    out = tmp_path / "out"
    out.mkdir()
    for i in range(5):
        _write_png(out / f"{i:06d}.png", np.zeros((8, 8, 3), np.uint8))
    assert main(_args(golden, avatar, driving, out)) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err, err
    assert len(list(out.iterdir())) == 5


def test_overwrite_replaces_exactly_the_frames(files, tmp_path: Path) -> None:
    golden, avatar, driving = files
    out = tmp_path / "out"
    out.mkdir()
    for i in range(50):  # a longer earlier run
        _write_png(out / f"{i:06d}.png", np.zeros((8, 8, 3), np.uint8))
    (out / "notes.txt").write_text("mine")
    assert main(_args(golden, avatar, driving, out, "--overwrite")) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.png", "000001.png", "000002.png", "notes.txt"]
    assert cv2.imread(str(out / "000000.png")).shape == (64, 64, 3)  # new frames


def test_existing_video_is_refused_then_replaced_with_overwrite(files, tmp_path, capsys) -> None:
    golden, avatar, driving = files
    video = tmp_path / "out.mp4"
    video.write_bytes(b"an earlier recording")
    assert main(_args(golden, avatar, driving, video)) == 2
    assert "exists" in capsys.readouterr().err
    assert video.read_bytes() == b"an earlier recording"
    assert main(_args(golden, avatar, driving, video, "--overwrite")) == 0
    assert _video_frames(video) == 3


# --- failed runs leave nothing; Ctrl+C says what was saved ------------------------------------


@pytest.mark.parametrize("output", ["out.mp4", "frames"])
def test_failed_run_leaves_no_output(files, tmp_path: Path, output) -> None:
    golden, avatar, driving = files
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"not a checkpoint at all" * 100)
    args = _with(_args(golden, avatar, driving, tmp_path / output), "--checkpoint", str(bad))
    assert main(args) == 2
    assert not (tmp_path / output).exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_missing_backend_leaves_no_video(files, tmp_path: Path) -> None:
    golden, avatar, driving = files
    args = _args(golden, avatar, driving, tmp_path / "out.mp4", "--backend", "tensorrt")
    assert main(args) != 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == []


def test_ctrl_c_before_the_first_frame(files, tmp_path: Path, monkeypatch, capsys) -> None:
    golden, avatar, driving = files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(live.app, "create_engine", interrupted)
    assert main(_args(golden, avatar, driving, tmp_path / "out.mp4")) == 130
    assert not (tmp_path / "out.mp4").exists()
    err = capsys.readouterr().err
    assert f"interrupted before the first frame: nothing saved to {tmp_path / 'out.mp4'}" in err


def test_ctrl_c_says_what_was_saved(files, tmp_path: Path, monkeypatch, capsys) -> None:
    golden, avatar, driving = files
    real_run = live.app.run

    def stop_after_two(frame, loop) -> None:
        if loop.frames_out == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        live.app, "run", lambda options, on_frame=None: real_run(options, stop_after_two)
    )
    video = tmp_path / "out.mp4"
    assert main(_args(golden, avatar, driving, video)) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 2 frames saved to {video}" in err
    assert _video_frames(video) == 2


# --- wrong results are not silent -------------------------------------------------------------


def test_truncated_input_warns_with_exit_4(files, tmp_path: Path, capsys) -> None:
    golden, avatar, _ = files
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(50):
        writer.write(rng.integers(0, 255, (64, 64, 3), np.uint8))
    writer.release()
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 6 // 10])  # cut: the header still announces 50 frames
    out = tmp_path / "out"
    assert main(_args(golden, avatar, clip, out)) == 4
    err = capsys.readouterr().err
    assert "warning: The output was saved" in err
    written = len(list(out.iterdir()))
    assert 0 < written < 50
    assert f"ended after {written} of the 50 frames" in err


def test_input_without_any_face_warns_with_exit_4(tiny_golden, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    avatar = shared_path("media", "avatars", "mona.jpg")
    driving = tmp_path / "blank"
    driving.mkdir()
    for i in range(3):
        _write_png(driving / f"{i}.png", np.full((96, 96, 3), 40, np.uint8))
    args = [a for a in _args(tiny_golden, avatar, driving, tmp_path / "out") if a != "--no-crop"]
    assert main(args) == 4
    err = capsys.readouterr().err
    assert "no face was found in any of the 3 frames" in err
    assert len(list((tmp_path / "out").iterdir())) == 3  # the output is kept


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (("--crop-scale", "9"), "--crop-scale 9 is out of range"),
        (("--smoothing", "0"), "--smoothing 0 is out of range"),
        (("--crop-shift", "3"), "--crop-shift 3 is out of range"),
        (("--detect-hz", "-1"), "--detect-hz -1 is out of range"),
        (("--camera-size", "0x0"), "--camera-size 0x0 is not a usable size"),
        (("--camera-fps", "-5"), "--camera-fps -5 is out of range"),
        (("--input", "-1"), "--input -1 is not a camera"),
        (("--output-size", "255x255"), "--output-size 255x255 is not a usable size"),
    ],
)
def test_flag_messages_name_the_flag(tmp_path: Path, capsys, flags, phrase) -> None:
    assert main(["--avatar", str(tmp_path / "a.png"), *flags]) == 2
    err = capsys.readouterr().err
    assert phrase in err, err
    for internal in ("min_cutoff", "vertical_shift", "scale="):
        assert internal not in err


def test_all_flag_problems_at_once(tmp_path: Path, capsys) -> None:
    assert main(["--crop-scale", "9", "--camera-fps", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--avatar is required" in err and "--crop-scale" in err and "--camera-fps" in err


def test_live_start_up_reports_every_problem_before_the_engine(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    built = []
    monkeypatch.setattr(live.app, "create_engine", lambda *a, **k: built.append(1))
    args = [
        "--avatar",
        str(tmp_path / "missing.png"),
        "--input",
        "9",  # no such camera
        "--virtual-cam-device",
        "/dev/video99",
        "--preview",
        "--checkpoint",
        str(tmp_path / "none.pth.tar"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "problems must be fixed before starting" in err
    assert "missing.png does not exist" in err  # avatar
    assert "camera" in err.lower() and "virtual camera" in err.lower()
    assert "--preview was given but there is no display" in err
    assert "none.pth.tar" not in err and not built  # stopped before the checkpoint and engine


def test_progress_line_is_ended_before_errors() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(10, stream=stream)
    progress.update()
    progress.abort()
    stream.write("error: boom\n")
    assert "\nerror: boom" in stream.getvalue()
    assert stream.getvalue().startswith("\r1/10")


def test_no_native_noise_on_stderr(tiny_golden: Golden, tmp_path: Path) -> None:
    """MediaPipe's start-up warnings a user cannot act on do not reach the terminal."""
    avatar = shared_path("media", "avatars", "mona.jpg")
    driving = tmp_path / "d"
    driving.mkdir()
    image = cv2.imread(str(avatar))
    for i in range(2):
        cv2.imwrite(str(driving / f"{i}.png"), image)
    args = _args(tiny_golden, avatar, driving, tmp_path / "out")
    args = [a for a in args if a != "--no-crop"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_live.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"AVATARCAM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for noise in ("InitGoogle", "not aligned", "W0000"):
        assert noise not in result.stderr, result.stderr


def test_qt_is_pointed_at_fonts_and_kept_quiet(monkeypatch) -> None:
    from live.preview import quiet_qt

    monkeypatch.delenv("QT_QPA_FONTDIR", raising=False)
    monkeypatch.setenv("QT_LOGGING_RULES", "user.rules=true")
    quiet_qt()
    import os

    assert Path(os.environ["QT_QPA_FONTDIR"]).is_dir()
    assert os.environ["QT_LOGGING_RULES"] == "user.rules=true"  # the user's setting is kept
