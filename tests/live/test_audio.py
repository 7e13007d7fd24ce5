"""The driving video's audio in the output video: in sync, signed with it, or said why not."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from live.cli import main
from live.credentials import read_manifest
from tests.conftest import Golden

FPS = 25
SAMPLE_RATE = 16000


def _clip(path: Path, golden: Golden, frames: int, audio_codec: str | None = "aac") -> None:
    """A short MP4 of the golden's driving frames at 25 fps with a tone as long as the video."""
    driving = np.round(golden.arrays["driving"] * 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = None
        if audio_codec is not None:
            audio = container.add_stream(audio_codec, rate=SAMPLE_RATE)
            audio.layout = "mono"
        for i in range(frames):
            image = driving[i % len(driving)]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            samples = SAMPLE_RATE * frames // FPS
            t = np.arange(samples) / SAMPLE_RATE
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)[None]
            chunk = 1024
            for start in range(0, samples, chunk):
                part = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + chunk]),
                    format="flt",
                    layout="mono",
                )
                part.sample_rate = SAMPLE_RATE
                part.pts = start
                part.time_base = Fraction(1, SAMPLE_RATE)
                container.mux(audio.encode(part))
            container.mux(audio.encode(None))


def _audio(path: Path) -> tuple[float, float] | None:
    """When the decoded audio of ``path`` starts and how long it plays, in seconds."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        frames = [(f.time, f.samples / f.sample_rate) for f in container.decode(audio=0)]
    return frames[0][0], sum(length for _, length in frames)


@pytest.fixture
def audio_run(tiny_golden: Golden, tmp_path: Path, monkeypatch):
    """Runs the command on a driving MP4 with audio (the tiny golden model, marked)."""
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    avatar = tmp_path / "avatar.png"
    source = np.round(tiny_golden.arrays["source"][..., ::-1] * 255).astype(np.uint8)
    assert cv2.imwrite(str(avatar), source)

    def run(clip: Path, output: Path, *extra: str) -> int:
        return main(
            [
                *("--avatar", str(avatar), "--input", str(clip), "--output", str(output)),
                *("--checkpoint", str(tiny_golden.checkpoint), "--config"),
                *(str(tiny_golden.config), "--no-crop", "--backend", "torch", *extra),
            ]
        )

    return run


@pytest.mark.parametrize("suffix", [".mp4", ".webm"], ids=["remuxed", "re-encoded"])
def test_output_video_keeps_the_audio_in_sync_and_signed(
    audio_run, tiny_golden: Golden, tmp_path: Path, capsys, suffix: str
) -> None:
    clip = tmp_path / "talk.mp4"
    _clip(clip, tiny_golden, frames=12)
    out = tmp_path / f"out{suffix}"
    assert audio_run(clip, out) == 0
    assert "kept the audio of" in capsys.readouterr().err
    expected, got = _audio(clip), _audio(out)
    assert expected is not None and abs(expected[1] - 12 / FPS) < 1 / FPS
    assert got is not None and abs(got[1] - expected[1]) <= 1 / FPS, (got, expected)
    assert abs(got[0] - expected[0]) < 1 / FPS  # starts with the video, as in the input
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12
    if suffix == ".mp4":  # signed after the audio went in: the signature covers it
        found = read_manifest(out)
        assert found is not None and found["state"] in ("Valid", "Trusted"), found
        assert main(["verify", str(out)]) == 0
        report = capsys.readouterr().out
        assert "public disclosure mark (watermark v1) in 12/12 frames" in report
        assert "Content Credentials: valid signature" in report


def test_no_audio_drops_it(audio_run, tiny_golden: Golden, tmp_path: Path) -> None:
    clip = tmp_path / "talk.mp4"
    _clip(clip, tiny_golden, frames=3)
    out = tmp_path / "out.mp4"
    assert audio_run(clip, out, "--no-audio") == 0
    assert _audio(out) is None


def test_png_folder_says_once_that_it_has_no_audio(
    audio_run, tiny_golden: Golden, tmp_path: Path, capsys
) -> None:
    clip = tmp_path / "talk.mp4"
    _clip(clip, tiny_golden, frames=3)
    assert audio_run(clip, tmp_path / "frames") == 0
    err = capsys.readouterr().err
    assert err.count("cannot carry audio") == 1 and "--output out.mp4" in err
    silent = tmp_path / "silent.mp4"
    _clip(silent, tiny_golden, frames=3, audio_codec=None)
    assert audio_run(silent, tmp_path / "frames2") == 0
    assert "audio" not in capsys.readouterr().err  # nothing to lose, nothing said


def test_live_recordings_and_drifting_runs_say_why_audio_is_not_kept(
    tiny_golden: Golden, tmp_path: Path, caplog
) -> None:
    from live.audio import plan_audio

    clip = tmp_path / "talk.mp4"
    _clip(clip, tiny_golden, frames=3)
    out = tmp_path / "out.mp4"
    with caplog.at_level("INFO", logger="avatarcam"):
        assert plan_audio("0", out, live=True) is None
        assert plan_audio(str(clip), out, live=False, paced=True) is None
        assert plan_audio(str(clip), out, live=False, output_fps=50, input_fps=25) is None
        plan = plan_audio(str(clip), out, live=False, output_fps=25, input_fps=25)
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == "audio is not recorded: a live recording holds the animated video only"
    assert "--pace realtime drops" in said[1] and "--output-fps 50" in said[2]
    assert len(said) == 3 and plan is not None and plan.codec == "aac"
