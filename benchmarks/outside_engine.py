"""Per-frame cost outside the engine at 1280x720, stage by stage, with the real output paths.

Each 720p camera frame (the talking test GIF, upscaled and centred) goes through what
``run_live.py`` does around the engine: face framing (MediaPipe on the downscaled copy,
``detect_hz`` detections a second, the tracker in between), marking (invisible watermark),
the virtual camera and the preview. The engine's output is stood in for by the model-sized
driving crop.

- Virtual camera: :class:`live.virtualcam.VirtualCamera` (fit to 1280x720, letterbox) into
  :class:`benchmarks.pipeline.NullDeviceCamera`, which does what pyvirtualcam's Linux
  backend does with an RGB frame: libyuv ``RAWToI420`` (BT.601 RGB -> I420) into its own
  buffer, then ``write()`` of the I420 frame to the device. pyvirtualcam's converter lives
  in its native module and runs only inside ``Camera.send`` on an opened v4l2loopback
  device, so the same conversion is done with ``cv2.cvtColor(COLOR_RGB2YUV_I420)`` and
  written to ``/dev/null``.
- Preview: :func:`live.preview.compose_preview` and the RGB -> BGR copy that
  :class:`live.preview.PreviewWindow` hands ``cv2.imshow``, without the window.

Frames are interleaved with a baseline of detection on every frame (``detect_hz=0``) in the
same run. Reports p50/p90 per stage, the process CPU share of the run, and the host CPU.

    PYTHONPATH=. python -m benchmarks.outside_engine --frames 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.pipeline import NullDeviceCamera, OffscreenPreview


def camera_frames(gif: Path) -> list[np.ndarray]:
    """The GIF's frames upscaled to 720x720 and centred in 1280x720."""
    from PIL import Image

    frames = []
    with Image.open(gif) as image:
        for i in range(image.n_frames):
            image.seek(i)
            face = cv2.resize(np.asarray(image.convert("RGB")), (720, 720))
            canvas = np.zeros((720, 1280, 3), np.uint8)
            canvas[:, 280:1000] = face
            frames.append(canvas)
    return frames


def _percentiles(values: list[float]) -> dict[str, float]:
    data = np.asarray(values, np.float64)
    return {
        "p50": round(float(np.percentile(data, 50)), 3),
        "p90": round(float(np.percentile(data, 90)), 3),
    }


def measure(gif: Path, frames: int, resolution: int = 256, detect_hz: float = 5.0) -> dict:
    """Time each stage for ``frames`` 25 fps camera frames, ``detect_hz`` vs every frame."""
    from live.face import FaceDetector
    from live.framing import FramingConfig
    from live.marking import FrameMarker, MarkingOptions
    from live.pipeline import FaceCropper
    from live.virtualcam import VirtualCamera, VirtualCameraConfig

    images = camera_frames(gif)
    variants = {"tracked": detect_hz, "detect every frame": 0.0}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    with (
        FaceDetector("video") as tracked_detector,
        FaceDetector("video") as every_detector,
        VirtualCamera(VirtualCameraConfig(), camera_factory=NullDeviceCamera) as camera,
    ):
        croppers = {
            "tracked": FaceCropper(
                resolution, tracked_detector, FramingConfig(detect_hz=detect_hz)
            ),
            "detect every frame": FaceCropper(
                resolution, every_detector, FramingConfig(detect_hz=0)
            ),
        }
        marker = FrameMarker(MarkingOptions(), resolution)
        preview = OffscreenPreview()
        crops = np.empty((resolution, resolution, 3), np.uint8)
        stats = {"fps": 25.0, "framing": 1.0, "inference": 10.0, "output": 1.0}
        warm = 10
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for k in range(warm + frames):
            if k == warm:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                times = {name: {} for name in variants}
            frame = images[k % len(images)]
            for name in variants:  # interleaved: machine load hits both alike
                t0 = time.perf_counter()
                crop = croppers[name](frame, k / 25, crops)
                t1 = time.perf_counter()
                marked = marker(crop.image if crop.image is not None else crops)
                t2 = time.perf_counter()
                camera.send(marked)
                t3 = time.perf_counter()
                preview.show(frame, marked, crop.box, stats, "tracking")
                t4 = time.perf_counter()
                for stage, value in (
                    ("framing", t1 - t0),
                    ("watermark", t2 - t1),
                    ("virtual camera (fit + RGB->I420 + write)", t3 - t2),
                    ("preview (offscreen)", t4 - t3),
                    ("total", t4 - t0),
                ):
                    times[name].setdefault(stage, []).append(value * 1000)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        detections = {name: cropper.detections for name, cropper in croppers.items()}
    return {
        "frames": frames,
        "size": "1280x720",
        "detect_hz": detect_hz,
        "stages_ms": {
            name: {stage: _percentiles(v) for stage, v in stages.items()}
            for name, stages in times.items()
        },
        "detections": detections,
        "cpu_share_of_one_core": round(cpu / wall, 2),
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = [f for f in ("avx2", "avx512f", "avx512_vnni") if f" {f}" in flags]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(isa)})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gif", type=Path, default=Path("../shared/media/driving/mona-talking.gif")
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--detect-hz", type=float, default=5.0)
    args = parser.parse_args()
    result: dict[str, Any] = measure(args.gif, args.frames, detect_hz=args.detect_hz)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
