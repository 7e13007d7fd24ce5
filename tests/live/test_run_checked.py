"""run_checked counts what it checks and keeps nothing per frame, so a live run's memory
stays flat however long it lasts."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

import live.app
from live.app import run_checked
from live.loop import FrameRecord
from live.options import RunOptions
from live.startup import IncompleteRun


def _fake_run(frames: int, live_source: bool, status: str = "ok"):
    source = SimpleNamespace(is_live=live_source, frame_count=frames + 5)
    loop = SimpleNamespace(grabber=SimpleNamespace(source=source, mode="offline"))
    record = FrameRecord(0, status, "tracking", None, None, 0, 1.0)

    def run(options, on_frame=None, camera_factory=None):
        for _ in range(frames):
            on_frame(record, loop)
        return loop

    return run


def _growth(frames: int, monkeypatch) -> int:
    monkeypatch.setattr(live.app, "run", _fake_run(frames, live_source=True))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run_checked(RunOptions(avatar=Path("a.png")))
        gc.collect()
        return tracemalloc.get_traced_memory()[1] - before  # the peak during the run
    finally:
        tracemalloc.stop()


def test_a_long_live_run_keeps_nothing_per_frame(monkeypatch) -> None:
    short, long = _growth(1_000, monkeypatch), _growth(50_000, monkeypatch)
    # One status per frame would be 8 bytes a frame (a list of 50,000: 400 kB more).
    assert long - short < 40_000, (short, long)


def test_file_runs_are_still_checked(monkeypatch) -> None:
    monkeypatch.setattr(live.app, "run", _fake_run(10, live_source=False))
    with pytest.raises(IncompleteRun, match="ended after 10 of the 15 frames"):
        run_checked(RunOptions(avatar=Path("a.png")))
