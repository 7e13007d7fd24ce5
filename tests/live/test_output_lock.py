"""One run per output, and no lost recordings: a second run on the same output is refused,
SIGTERM and SIGHUP save the recording, and what kill -9 leaves is cleaned up by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.cli import main
from live.output_lock import OutputLock, part_files
from live.outputs import OutputError
from tests.conftest import ROOT, Golden


def _inputs(golden: Golden, tmp_path: Path, frames: int = 4) -> tuple[Path, Path]:
    avatar = tmp_path / "avatar.png"
    cv2.imwrite(str(avatar), np.round(golden.arrays["source"][..., ::-1] * 255).astype(np.uint8))
    driving = tmp_path / "driving"
    driving.mkdir()
    for i in range(frames):
        frame = golden.arrays["driving"][i % len(golden.arrays["driving"])]
        cv2.imwrite(
            str(driving / f"{i:04d}.png"), np.round(frame[..., ::-1] * 255).astype(np.uint8)
        )
    return avatar, driving


def _args(golden: Golden, avatar: Path, driving: Path, output: Path) -> list[str]:
    return [
        *("--avatar", str(avatar), "--input", str(driving), "--output", str(output)),
        *("--checkpoint", str(golden.checkpoint), "--config", str(golden.config)),
        *("--resolution", str(golden.resolution), "--backend", "torch", "--no-crop"),
    ]


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    output = tmp_path / "rec.mp4"
    with OutputLock(output):
        with pytest.raises(OutputError, match="Another avatarcam run is writing"):
            OutputLock(tmp_path / "." / "rec.mp4")  # the same output, spelt otherwise
        OutputLock(tmp_path / "other.mp4").close()  # another output is free
    OutputLock(output).close()  # free again once released


@pytest.mark.parametrize("name", ["frames", "rec.mp4"])
def test_a_second_run_on_the_same_output_is_refused(
    tiny_golden: Golden, tmp_path: Path, capsys, name: str
) -> None:
    avatar, driving = _inputs(tiny_golden, tmp_path)
    output = tmp_path / name
    with OutputLock(output):  # a first run, still writing
        status = main(_args(tiny_golden, avatar, driving, output))
    assert status != 0
    assert "Another avatarcam run is writing to" in capsys.readouterr().err
    assert not output.exists()


_SLOW_RUN = """
import sys, time
import live.app
real = live.app.create_engine
def slow(*args, **kwargs):
    engine = real(*args, **kwargs)
    animate = engine.animate
    def slowly(driving):
        time.sleep(0.2)
        return animate(driving)
    engine.animate = slowly
    return engine
live.app.create_engine = slow
from live.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start_slow_run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_part(output: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = part_files(output)
        if parts and parts[0].stat().st_size > 0:
            return parts[0]
        if process.poll() is not None:
            pytest.fail(f"the run ended before recording: {process.communicate()[1][-2000:]}")
        time.sleep(0.1)
    process.kill()
    pytest.fail("no partial recording appeared")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_the_recording(tiny_golden: Golden, tmp_path: Path, number) -> None:
    avatar, driving = _inputs(tiny_golden, tmp_path, frames=200)
    output = tmp_path / "rec.mp4"
    process = _start_slow_run(_args(tiny_golden, avatar, driving, output))
    _wait_for_part(output, process)
    time.sleep(0.5)  # a few frames into the file
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "frames saved to" in stderr
    assert output.is_file() and output.stat().st_size > 0
    assert part_files(output) == []


def test_kill_9_leftovers_are_removed_by_the_next_run(
    tiny_golden: Golden, tmp_path: Path, capsys
) -> None:
    avatar, driving = _inputs(tiny_golden, tmp_path, frames=200)
    output = tmp_path / "rec.mp4"
    process = _start_slow_run(_args(tiny_golden, avatar, driving, output))
    part = _wait_for_part(output, process)
    process.kill()  # SIGKILL: nothing can save the file
    process.communicate(timeout=60)
    assert part.exists() and not output.exists()
    short = tmp_path / "short"
    short.mkdir()
    for path in sorted(driving.iterdir())[:3]:
        path.rename(short / path.name)
    assert main(_args(tiny_golden, avatar, short, output)) == 0
    err = capsys.readouterr().err
    assert f"removed {part}" in err and "unfinished recording" in err
    assert part_files(output) == [] and output.is_file()
