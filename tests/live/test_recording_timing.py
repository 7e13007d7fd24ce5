"""Recordings in real time: a clip played as a camera (``--pace realtime``) through an engine
slower than the clip records a video as long as the clip, and every frame carries its
presentation time from the source to the file."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import live.app
from live.cli import main
from live.outputs import VideoFileSink
from tests.conftest import Golden, shared_path

CLIP_FPS = 25


def _clip(path: Path, frames: int) -> Path:
    """The first ``frames`` frames of the talking test GIF as an H.264 clip at 25 fps."""
    with Image.open(shared_path("media", "driving", "mona-talking.gif")) as gif:
        images = []
        for i in range(frames):
            gif.seek(i % gif.n_frames)
            images.append(np.asarray(gif.convert("RGB")))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=CLIP_FPS)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _duration(path: Path) -> tuple[float, int]:
    """(seconds, frames) of a video file: how long a player shows it (the container's
    duration, from the frames' timestamps) and how many frames it holds. Frames over the
    average rate is no measure of a variable-rate file: FFmpeg's average leaves the last
    frame's duration out, so it is off by up to a gap between frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return container.duration / 1e6, frames


def test_paced_recording_with_a_slow_engine_plays_as_long_as_the_clip(
    tiny_golden: Golden, tmp_path: Path, monkeypatch
) -> None:
    clip = _clip(tmp_path / "clip.mp4", 50)  # 2 s
    clip_seconds, clip_frames = _duration(clip)
    assert clip_frames == 50
    real_create = live.app.create_engine
    animated = []

    def slow_engine(*args, **kwargs):
        engine = real_create(*args, **kwargs)
        animate = engine.animate

        def slow(driving):
            time.sleep(0.12)  # about 8 frames/s: slower than the 25 fps clip
            animated.append(driving)
            return animate(driving)

        engine.animate = slow
        return engine

    monkeypatch.setattr(live.app, "create_engine", slow_engine)
    record = tmp_path / "rec.mp4"
    status = main(
        [
            *("--avatar", str(shared_path("media", "avatars", "einstein.jpg"))),
            *("--input", str(clip), "--pace", "realtime", "--output", str(record)),
            *("--no-virtual-cam", "--no-preview"),
            *("--checkpoint", str(tiny_golden.checkpoint), "--config", str(tiny_golden.config)),
            *("--resolution", str(tiny_golden.resolution), "--backend", "torch"),
        ]
    )
    assert status == 0
    assert 0 < len(animated) < 0.6 * clip_frames  # the engine really was slower than the clip
    seconds, frames = _duration(record)
    assert abs(seconds - clip_seconds) <= 0.05 * clip_seconds, (seconds, clip_seconds, frames)


def _shown_per_slot(path: Path, rate: float, slots: int) -> list[int]:
    """The dominant colour channel of the frame shown in each slot of 1/``rate`` s."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [
            (float(frame.time), int(np.argmax(frame.to_ndarray(format="rgb24").mean(axis=(0, 1)))))
            for frame in container.decode(stream)
        ]
    shown = []
    for slot in range(slots):
        times = [channel for time_, channel in decoded if time_ <= slot / rate + 1e-6]
        shown.append(times[-1])
    return shown


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_timed_video_sink_places_frames_by_presentation_time(tmp_path: Path, suffix) -> None:
    """At 10 fps, frames at 0, 0.2 and 0.22 s, the input's last frame at 0.5 s: the first
    frame is shown over slots 0-1 (until the second came), the second in slot 2, the third
    shares that slot so it is shown from slot 3 through the input's last slot (5); the file
    lasts 0.6 s and holds each frame once (plus one copy marking the end), not one per slot."""
    path = tmp_path / f"t{suffix}"
    sink = VideoFileSink(path, 10.0, timed=True)
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    for pts, colour in zip((0.0, 0.2, 0.22), colours, strict=True):
        sink.send(np.full((16, 16, 3), colour, np.uint8), pts)
    sink.finish(0.5)
    sink.close()
    assert sink.count == 6  # slots covered, what the audio is cut to
    assert _shown_per_slot(path, 10.0, 6) == [0, 0, 1, 2, 2, 2]
    with av.open(str(path)) as container:
        assert container.duration / 1e6 == pytest.approx(0.6, abs=0.01)
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_timed_sink_cost_does_not_grow_with_the_gaps(tmp_path: Path) -> None:
    """A 100 fps timed recording fed one frame a second (a camera far faster than the engine)
    encodes each frame once: sending costs about what writing the same frames untimed does,
    not 100 encodes per frame, and the file still lasts as long as the run."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), np.uint8) for _ in range(8)]
    timed = VideoFileSink(tmp_path / "timed.mp4", 100.0, timed=True)
    plain = VideoFileSink(tmp_path / "plain.mp4", 100.0)
    spent = {"timed": 0.0, "plain": 0.0}
    for i, image in enumerate(images):  # interleaved, so machine load hits both alike
        for name, sink in (("timed", timed), ("plain", plain)):
            start = time.perf_counter()
            sink.send(image, float(i))
            spent[name] += time.perf_counter() - start
    timed.finish(float(len(images) - 1))
    timed.close()
    plain.close()
    assert spent["timed"] <= 3 * spent["plain"] + 0.2, spent
    with av.open(str(tmp_path / "timed.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(images)
        assert container.duration / 1e6 == pytest.approx(len(images) - 1 + 0.01, abs=0.02)


@pytest.mark.parametrize("timed", [False, True])
def test_video_sink_without_timing_writes_one_frame_per_call(tmp_path: Path, timed) -> None:
    """Offline runs (not timed) write every frame once whatever its time; timed frames that
    come faster than the rate share slots."""
    sink = VideoFileSink(tmp_path / "o.mp4", 10.0, timed=timed)
    for i in range(6):
        sink.send(np.full((16, 16, 3), 40 * i, np.uint8), i * 0.01)
    sink.close()
    assert _duration(tmp_path / "o.mp4")[1] == (1 if timed else 6)
