"""The live loop with an engine that can be briefly unavailable (a remote server
reconnecting): the loop keeps going, shows the status, and reports the round trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import live.app
from engines.errors import EngineUnavailable
from live.app import run
from live.cli import build_parser, options_from_args
from live.loop import FrameRecord
from tests.conftest import Golden


def _write(path: Path, image: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_an_unavailable_engine_holds_the_last_frame_and_shows_why(
    tiny_golden: Golden, tmp_path: Path, monkeypatch
) -> None:
    frames = np.round(tiny_golden.arrays["driving"] * 255).astype(np.uint8)
    avatar = tmp_path / "avatar.png"
    _write(avatar, np.round(tiny_golden.arrays["source"] * 255).astype(np.uint8))
    driving = tmp_path / "driving"
    driving.mkdir()
    for i, frame in enumerate(frames):
        _write(driving / f"{i:03d}.png", frame)
    real_create = live.app.create_engine
    calls = {"n": 0}

    def flaky_engine(*args, **kwargs):
        engine = real_create(*args, **kwargs)
        animate = engine.animate

        def flaky(driving_input):
            calls["n"] += 1
            if calls["n"] in (3, 4):  # frames 1 and 2 (frame 0 animates twice: calibration)
                raise EngineUnavailable("server lost, reconnecting in 0.5 s (attempt 1)")
            engine.last_rtt_ms = 12.5
            return animate(driving_input)

        engine.animate = flaky
        return engine

    monkeypatch.setattr(live.app, "create_engine", flaky_engine)
    records: list[FrameRecord] = []
    out = tmp_path / "out"
    args = build_parser().parse_args(
        [
            *("--avatar", str(avatar), "--input", str(driving), "--output", str(out)),
            *("--checkpoint", str(tiny_golden.checkpoint), "--config", str(tiny_golden.config)),
            *("--resolution", str(tiny_golden.resolution), "--backend", "torch", "--no-crop"),
        ]
    )
    run(options_from_args(args), on_frame=lambda record, loop: records.append(record))
    statuses = [r.status for r in records]
    assert len(records) == len(frames)  # nothing stopped the run
    assert statuses[1] == statuses[2] == "engine: server lost, reconnecting in 0.5 s (attempt 1)"
    assert statuses[0] == statuses[3] == "ok"
    written = [cv2.imread(str(p)) for p in sorted(out.iterdir())]
    np.testing.assert_array_equal(written[1], written[0])  # the last frame is held
    np.testing.assert_array_equal(written[2], written[0])
    assert records[3].stages_ms["rtt"] == 12.5  # the round trip is part of the stats
