"""A live run at the default precision never waits for int8: fp32 serves the camera (status
"optimizing for this CPU") while a slow calibrator works, and int8 takes over afterwards."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import engines.int8_auto
import engines.int8_switch
import live.app
from live.app import run
from live.cli import build_parser, options_from_args
from live.loop import FrameRecord, LiveLoop
from live.sinks import OutputFrame
from live.sources import FrameSource
from tests.conftest import Golden
from tests.live.fakes import write_png

pytest.importorskip("openvino")
pytest.importorskip("nncf")

#: The loop is stopped after this long even if int8 never took over (the asserts then fail).
DEADLINE_S = 300.0


class StandInCamera(FrameSource):
    """A live source cycling the golden's driving frames at about 30 fps."""

    is_live = True

    def __init__(self, frames: list[np.ndarray]):
        super().__init__()
        self._frames = frames
        self._count = 0

    @property
    def name(self) -> str:
        return "stand-in camera"

    @property
    def size(self) -> tuple[int, int]:
        return (self._frames[0].shape[1], self._frames[0].shape[0])

    @property
    def fps(self) -> float:
        return 30.0

    def _grab(self) -> np.ndarray | None:
        time.sleep(1 / 30)
        self._count += 1
        return self._frames[self._count % len(self._frames)].copy()

    def _release(self) -> None:
        pass


class Camera:
    """pyvirtualcam.Camera's interface, counting frames."""

    def __init__(self, width: int, height: int, fps: float, device: str | None):
        self.width, self.height, self.fps, self.device = width, height, fps, "/dev/video-fake"
        self.sent = 0

    def send(self, frame: np.ndarray) -> None:
        self.sent += 1

    def sleep_until_next_frame(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_live_run_serves_fp32_while_calibrating_then_switches_to_int8(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(engines.int8_switch, "LIVE_FRAMES", 6)
    frames = [np.round(f * 255).astype(np.uint8) for f in tiny_golden.arrays["driving"]]
    monkeypatch.setattr(live.app, "open_source", lambda *a, **k: StandInCamera(frames))
    avatar = tmp_path / "avatar.png"
    write_png(avatar, np.round(tiny_golden.arrays["source"] * 255).astype(np.uint8))

    calibrating = threading.Event()
    real = engines.int8_auto.start_verified_int8

    def slow_calibrator(checkpoint, config, options, calibration):
        if callable(calibration):  # the start-up probe of the cache: no frames
            return real(checkpoint, config, options, calibration)
        calibrating.set()
        time.sleep(2.0)  # a slow CPU
        return real(checkpoint, config, options, calibration)

    monkeypatch.setattr(engines.int8_auto, "start_verified_int8", slow_calibrator)
    seen: list[tuple[str, str, bool]] = []  # (precision, status, calibration running)
    deadline = time.monotonic() + DEADLINE_S

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        engine = loop.animator.engine
        seen.append((engine.precision, engine.status, calibrating.is_set()))
        if sum(1 for p, _, _ in seen if p == "int8") >= 5 or time.monotonic() > deadline:
            loop.stop()

    argv = [
        "--avatar", str(avatar), "--input", "0", "--checkpoint", str(tiny_golden.checkpoint),
        "--config", str(tiny_golden.config), "--resolution", "64", "--no-crop",
        "--backend", "openvino", "--virtual-cam", "--no-preview", "--no-watermark",
    ]  # fmt: skip
    shown: list[str] = []  # what the preview's status bar would say (every output's frame)
    send = LiveLoop._send

    def record_status(self: LiveLoop, frame: OutputFrame) -> None:
        shown.append(frame.status)
        send(self, frame)

    monkeypatch.setattr(LiveLoop, "_send", record_status)
    options = options_from_args(build_parser().parse_args(argv))
    loop = run(options, on_frame=on_frame, camera_factory=Camera)
    precisions = [p for p, _, _ in seen]
    assert precisions[0] == "fp32" and precisions[-1] == "int8"
    first_int8 = precisions.index("int8")
    assert set(precisions[first_int8:]) == {"int8"}  # switched once, for good
    while_calibrating = [s for p, s, c in seen[:first_int8] if c]
    assert len(while_calibrating) >= 10  # frames kept flowing during the slow calibration
    assert all("optimizing for this CPU" in s for s in while_calibrating)
    assert all(s == "" for _, s, _ in seen[first_int8:])
    assert loop.frames_out == len(seen)
    assert any("| optimizing for this CPU: calibrating int8" in s for s in shown)
    frames_shown = [s for s in shown if not s.startswith("camera:")]  # not the idle refresh
    assert frames_shown[-1] == "ok"  # the status goes once int8 serves
    err = capfd.readouterr().err
    assert "fp32 serves the camera now" in err
    assert "precision auto: int8, verified against fp32" in err and "switching from fp32" in err
