"""Library chatter only with -v, marked as the library's; FFmpeg's lines never before our error."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from live.logs import configure_logging
from tests.conftest import ROOT


def _said(verbose: bool, monkeypatch) -> str:
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)  # set again when not verbose
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(verbose, stream)
    try:
        logging.getLogger("c2pa.loader").debug("Library not found at: /x/libc2pa_c.so")
        # A library logger nobody configured (nncf's own, once imported by another test, has a
        # handler of its own and does not propagate; engines.int8 quiets it while quantizing).
        logging.getLogger("some_library").info("Statistics collection")
        logging.getLogger("c2pa").warning("a real warning")
        logging.getLogger("avatarcam").info("wrote 2 frames")
        logging.getLogger("engines.select").debug("engine details")
    finally:  # the root logger as it was (pytest's handlers)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    return stream.getvalue()


def test_library_chatter_is_hidden_without_verbose(monkeypatch) -> None:
    said = _said(False, monkeypatch)
    assert "Library not found" not in said and "Statistics" not in said
    assert "[library c2pa] a real warning" in said
    assert "wrote 2 frames\n" in said and "[library avatarcam]" not in said


def test_library_chatter_is_marked_with_verbose(monkeypatch) -> None:
    said = _said(True, monkeypatch).splitlines()
    assert "[library c2pa.loader] Library not found at: /x/libc2pa_c.so" in said
    assert "[library some_library] Statistics collection" in said
    assert "wrote 2 frames" in said and "engine details" in said  # ours, unmarked


def _no_moov(path: Path) -> None:
    """An MP4 cut before its index (moov atom): FFmpeg complains when it opens it."""
    with av.open(str(path.with_suffix(".full.mp4")), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    path.write_bytes(path.with_suffix(".full.mp4").read_bytes()[:200])


def test_ffmpeg_lines_only_with_verbose(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    avatar = tmp_path / "a.png"
    assert cv2.imwrite(str(avatar), np.zeros((64, 64, 3), np.uint8))
    clip = tmp_path / "clip.mp4"
    _no_moov(clip)
    args = [sys.executable, "run_live.py", "--avatar", str(avatar), "--input", str(clip)]
    args += ["--output", str(tmp_path / "out")]
    quiet, verbose = (
        subprocess.run(
            args + extra,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for extra in ([], ["-v"])
    )
    assert quiet.returncode == 2 and quiet.stderr.startswith("error: Cannot decode"), quiet.stderr
    assert "moov atom" not in quiet.stderr
    assert verbose.returncode == 2
    lines = verbose.stderr.splitlines()
    assert any(x.startswith("[library FFmpeg] ") and "moov atom not found" in x for x in lines)
    assert not any("moov atom" in x and not x.startswith("[library FFmpeg]") for x in lines)
