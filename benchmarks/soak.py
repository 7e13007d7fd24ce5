"""Soak: a long live-like run with camera losses; resident memory, open file descriptors and
per-frame latency must stay flat.

A fake camera (live: newest frame wins, reads may fail) delivers ``--frames`` 320x240 frames at
``--fps`` and goes away every ``--loss-every`` frames (it is reopened by the grabber's back-off,
as a real unplugged camera would be). The real loop runs the golden tiny model (torch backend),
the watermark, a timed video recording and a null virtual camera. Every ``--window`` camera
frames the run logs RSS, open fds and the median latency of the frames animated in that
window.

    PYTHONPATH=. python -m benchmarks.soak --golden ../shared/fomm/golden/tiny64 --frames 10000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from live.sources import FrameSource


class LossyCamera(FrameSource):
    """A live source of ``frames`` frames at ``fps`` that fails every ``loss_every`` frames
    and can be reopened at once; ends (read returns None, reopen raises) after ``frames``."""

    is_live = True

    def __init__(self, frames: int, fps: float, loss_every: int) -> None:
        super().__init__()
        self.total = frames
        self.period = 1 / fps
        self.loss_every = loss_every
        self.produced = 0
        self.losses = 0
        self.lost = False
        self._fps = fps
        self._size = (320, 240)
        self._next = time.perf_counter()
        base = np.zeros((240, 320, 3), np.uint8)
        base[60:180, 100:220] = (180, 140, 120)
        self._base = base

    @property
    def name(self) -> str:
        return "soak camera"

    def _grab(self) -> np.ndarray | None:
        if self.lost or self.produced >= self.total:
            return None
        delay = self._next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self.period, time.perf_counter() - self.period)
        self.produced += 1
        if self.produced % self.loss_every == 0:
            self.lost = True
            self.losses += 1
            raise OSError("camera unplugged (soak)")
        image = self._base.copy()
        shift = self.produced % 40
        image[:, shift : shift + 4] = 255  # something moves
        return image

    def _release(self) -> None:
        pass

    def reopen(self) -> None:
        if self.produced >= self.total:
            raise OSError("soak over")
        self.lost = False
        self._closed = False


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=Path, required=True, help="golden path without suffix")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--fps", type=float, default=100.0)
    parser.add_argument("--loss-every", type=int, default=2_500)
    parser.add_argument("--window", type=int, default=1_000)
    args = parser.parse_args()

    import torch

    from engines import create_engine
    from engines.options import EngineOptions
    from export.config import load_config
    from live.animator import Animator
    from live.grabber import LatestFrameGrabber, RetryPolicy
    from live.loop import LiveLoop
    from live.marking import FrameMarker, MarkingOptions
    from live.outputs import VideoFileSink
    from live.pipeline import PreparedAvatar, ResizeCropper
    from live.virtualcam import VirtualCamera, VirtualCameraConfig

    torch.set_num_threads(1)
    config = load_config(args.golden.with_suffix(".yaml"))
    engine = create_engine(
        args.golden.with_suffix(".pth.tar"), config, EngineOptions(backend="torch")
    )
    size = engine.io.resolution
    avatar = PreparedAvatar("soak", np.full((size, size, 3), 128, np.uint8), True)
    camera = LossyCamera(args.frames, args.fps, args.loss_every)
    grabber = LatestFrameGrabber(camera, "live", retry=RetryPolicy(0.05, 1.0, 0.05))
    rows: list[dict] = []
    window: list[float] = []
    start = time.perf_counter()

    def on_frame(record, loop) -> None:
        window.append(record.latency_ms)
        if os.environ.get("SOAK_DEBUG"):
            print({k: round(v, 1) for k, v in record.stages_ms.items()}, flush=True)
        if camera.produced // args.window > len(rows):
            rows.append(
                {
                    "camera_frames": camera.produced,
                    "animated": loop.frames_out,
                    "losses": camera.losses,
                    "rss_mb": round(_rss_mb(), 1),
                    "fds": _fds(),
                    "latency_p50_ms": round(float(np.median(window)), 1),
                    "latency_p99_ms": round(float(np.percentile(window, 99)), 1),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            window.clear()
        if camera.produced >= args.frames:
            loop.stop()

    class NullCamera:
        def __init__(self, width, height, fps, device=None):
            self.width, self.height, self.fps, self.device = width, height, fps, "null"

        def send(self, frame):
            pass

        def sleep_until_next_frame(self):
            pass

        def close(self):
            pass

    with tempfile.TemporaryDirectory() as folder:
        sink = VideoFileSink(Path(folder) / "soak.mp4", 25.0, timed=True)
        vcam_config = VirtualCameraConfig(width=640, height=360, fps=30.0)
        with sink, engine, VirtualCamera(vcam_config, camera_factory=NullCamera) as vcam:
            loop = LiveLoop(
                grabber,
                ResizeCropper(size),
                Animator(engine),
                [avatar],
                sinks=[sink],
                virtual_camera=vcam,
                on_frame=on_frame,
                marker=FrameMarker(MarkingOptions(), size),
            )
            loop.run()
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    print(
        "SUMMARY "
        + json.dumps(
            {
                "camera_frames": camera.produced,
                "animated": loop.frames_out,
                "losses": camera.losses,
                "rss_mb_growth_after_warmup": round(last["rss_mb"] - first["rss_mb"], 1),
                "fds_first_last": [first["fds"], last["fds"]],
                "latency_p50_first_last_ms": [first["latency_p50_ms"], last["latency_p50_ms"]],
            }
        )
    )


if __name__ == "__main__":
    main()
