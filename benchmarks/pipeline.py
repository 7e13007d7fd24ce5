"""End-to-end live-pipeline benchmark: a video played like a camera through the real loop.

Decode, face detection, crop, engine, compose and output (a virtual camera that converts each
frame to I420 as pyvirtualcam does and writes it to /dev/null: :class:`NullDeviceCamera`) run
exactly as ``run_live.py`` runs them, the input paced at its own frame rate so stale frames
are dropped as they would be with a webcam. Reports per-stage p50/p99, the loop's achieved
FPS, the frames it had to drop, and the added latency (frame captured -> frame sent).
:mod:`benchmarks.outside_engine` times the stages around the engine at 1280x720 one by one,
with the preview drawn offscreen (:class:`OffscreenPreview`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class NullCamera:
    """pyvirtualcam.Camera's interface; throws every frame away (the null sink)."""

    def __init__(self, width: int, height: int, fps: float, device: str | None):
        self.width, self.height, self.fps = width, height, fps
        self.device = device or "null"
        self.frames = 0

    def send(self, frame: np.ndarray) -> None:
        self.frames += 1

    def sleep_until_next_frame(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullDeviceCamera(NullCamera):
    """pyvirtualcam.Camera (fmt RGB) on Linux, the device replaced by /dev/null: each frame
    is converted to I420 into a buffer it owns and written out."""

    def __init__(self, width: int, height: int, fps: float, device: str | None):
        super().__init__(width, height, fps, device)
        self.i420 = np.empty((height * 3 // 2, width), np.uint8)  # the last frame: Y, U, V planes
        self._fd = os.open(os.devnull, os.O_WRONLY)

    def send(self, frame: np.ndarray) -> None:
        cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420, dst=self.i420)
        os.write(self._fd, self.i420)
        self.frames += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OffscreenPreview:
    """PreviewWindow.show's drawing (compose, then the BGR copy for imshow), no window."""

    def __init__(self, height: int = 360) -> None:
        self.height = height
        self._canvas: np.ndarray | None = None
        self._bgr: np.ndarray | None = None

    def show(self, camera, avatar, box, stats, status) -> np.ndarray:
        from live.preview import compose_preview

        self._canvas = compose_preview(
            camera, avatar, box, stats, status, height=self.height, out=self._canvas
        )
        if self._bgr is None or self._bgr.shape != self._canvas.shape:
            self._bgr = np.empty_like(self._canvas)
        return cv2.cvtColor(self._canvas, cv2.COLOR_RGB2BGR, dst=self._bgr)


@dataclass(frozen=True)
class PipelineConfig:
    """One end-to-end run."""

    video: Path  # driving video, GIF or folder played like a camera
    avatar: Path  # avatar photo
    checkpoint: Path  # FOMM checkpoint
    config: str  # preset or YAML
    resolution: int | None  # model frame size; None: the config's
    backend: str  # engine backend
    precision: str  # fp32 or fp16
    device: str  # cpu, cuda or auto
    crop: bool = True  # face framing on (as live)
    cache_dir: Path | None = None  # engine artifact cache; None: the engines' default
    server: Any = None  # engines.options.RemoteOptions: run on an avatar server (backend remote)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    data = np.asarray(values, np.float64)
    return {
        "p50": float(np.percentile(data, 50)),
        "p99": float(np.percentile(data, 99)),
        "max": float(data.max()),
    }


def measure_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the live loop once over ``cfg.video`` and summarise what each frame cost."""
    from engines.options import EngineOptions
    from live.app import run
    from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions

    options = RunOptions(
        avatar=Path(cfg.avatar),
        capture=CaptureOptions(input=str(cfg.video), timing="paced"),
        output=OutputOptions(virtual_camera=True, preview=False),
        crop=cfg.crop,
        model=ModelOptions(
            checkpoint=Path(cfg.checkpoint), config=cfg.config, resolution=cfg.resolution or None
        ),
        engine=EngineOptions(
            backend=cfg.backend,
            precision=cfg.precision,
            device=cfg.device,
            cache_dir=cfg.cache_dir,
            server=cfg.server,
        ),
    )
    stages: dict[str, list[float]] = {}
    sent: list[float] = []
    cameras: list[NullCamera] = []

    def on_frame(record, loop) -> None:
        sent.append(time.perf_counter())
        for name, value in record.stages_ms.items():
            stages.setdefault(name, []).append(value)

    def factory(width: int, height: int, fps: float, device: str | None) -> NullCamera:
        cameras.append(NullDeviceCamera(width, height, fps, device))
        return cameras[-1]

    start = time.perf_counter()
    loop = run(options, on_frame=on_frame, camera_factory=factory)
    wall = time.perf_counter() - start
    achieved = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    latency = stages.pop("latency", [])
    return {
        "video": str(cfg.video),
        "backend": cfg.backend,
        "precision": cfg.precision,
        "engine": loop.animator.engine.describe(),
        "frames_sent": len(sent),
        "frames_dropped": loop.dropped,
        "source_fps": loop.grabber.source.fps,
        "achieved_fps": achieved,
        "wall_s": wall,
        "stages_ms": {name: _percentiles(values) for name, values in stages.items()},
        "added_latency_ms": _percentiles(latency),
        "null_sink_frames": cameras[0].frames if cameras else 0,
    }


def pipeline_markdown(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the pipeline section of the report."""
    lines = [
        f"Input `{result['video']}` played at {result['source_fps'] or 0:g} fps through "
        f"{result['engine']}: {result['frames_sent']} frames sent, {result['frames_dropped']} "
        f"dropped to keep pace, achieved {result['achieved_fps']:.2f} FPS.",
        "",
        "| stage | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = dict(result["stages_ms"])
    rows["added latency (capture -> sent)"] = result["added_latency_ms"]
    for name, stats in rows.items():
        if stats:
            lines.append(
                f"| {name} | {stats['p50']:.1f} | {stats['p99']:.1f} | {stats['max']:.1f} |"
            )
    return lines
