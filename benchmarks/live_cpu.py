"""CPU spent outside the engine per animated frame, in a live-like run.

A 1280x720 clip at 30 fps is played like a camera (paced) through the real loop: capture,
MediaPipe face framing, marking and a null virtual camera (pyvirtualcam's interface, nothing
sent). The engine is the tiny golden model made slow with a sleep (100 ms a frame, like a CPU
engine at 10 frames/s), so most camera frames arrive while it is busy. The process's CPU time
(all threads) less the CPU time of the engine calls, divided by the frames animated, is the
per-frame cost of everything around the engine: what on-demand decoding and framing only the
frames that will be animated save.

    PYTHONPATH=. python -m benchmarks.live_cpu --golden ../shared/fomm/golden/tiny64 \\
        --avatar ../shared/media/avatars/einstein.jpg --seconds 6

The same file runs against an older checkout (``PYTHONPATH=OLD python benchmarks/live_cpu.py``):
it uses the options either version takes.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.pipeline import NullCamera


def _clip(path: Path, seconds: float, gif: Path) -> Path:
    """A 1280x720, 30 fps H.264 clip of the talking test GIF, upscaled and centred."""
    import av
    import cv2
    from PIL import Image

    with Image.open(gif) as image:
        frames = []
        for i in range(image.n_frames):
            image.seek(i)
            face = cv2.resize(np.asarray(image.convert("RGB")), (720, 720))
            canvas = np.zeros((720, 1280, 3), np.uint8)
            canvas[:, 280:1000] = face
            frames.append(canvas)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(round(seconds * 30)):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def measure(golden: Path, avatar: Path, clip: Path, delay: float) -> dict:
    import dataclasses

    import live.app
    from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions

    fields = {f.name for f in dataclasses.fields(CaptureOptions)}
    paced = {"timing": "paced"} if "timing" in fields else {"realtime": True}
    options = RunOptions(
        avatar=avatar,
        capture=CaptureOptions(input=str(clip), **paced),
        output=OutputOptions(virtual_camera=True, preview=False),
        model=ModelOptions(
            checkpoint=golden.with_suffix(".pth.tar"), config=str(golden.with_suffix(".yaml"))
        ),
    )
    engine_cpu = [0.0]
    real_create = live.app.create_engine

    def slow_engine(*args, **kwargs):
        engine = real_create(*args, **kwargs)
        animate = engine.animate

        def slow(driving):
            start = time.thread_time()
            result = animate(driving)
            engine_cpu[0] += time.thread_time() - start
            time.sleep(delay)
            return result

        engine.animate = slow
        return engine

    live.app.create_engine = slow_engine
    animated = [0]
    first: list[float] = []  # process CPU, engine CPU and wall time at the first frame

    def on_frame(record, loop) -> None:
        # Counted from the first frame sent: start-up (engine build, avatar framing) is not
        # per-frame work.
        if not first:
            first.extend((time.process_time(), engine_cpu[0], time.perf_counter()))
            return
        animated[0] += record.status == "ok" or record.status.startswith("holding")

    loop = live.app.run(options, on_frame=on_frame, camera_factory=NullCamera)
    cpu, wall = time.process_time() - first[0], time.perf_counter() - first[2]
    engine_cpu[0] -= first[1]
    outside = cpu - engine_cpu[0]
    return {
        "frames_animated": animated[0],
        "frames_sent": loop.frames_out,
        "dropped": loop.dropped,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "engine_cpu_s": round(engine_cpu[0], 2),
        "cpu_outside_engine_ms_per_animated_frame": round(1000 * outside / max(animated[0], 1), 1),
        "cpu_share_of_one_core_outside_engine": round(outside / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=Path, required=True, help="golden path without suffix")
    parser.add_argument("--avatar", type=Path, required=True)
    parser.add_argument(
        "--gif", type=Path, default=Path("../shared/media/driving/mona-talking.gif")
    )
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--delay", type=float, default=0.1, help="engine sleep per frame (s)")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        clip = _clip(Path(folder) / "clip.mp4", args.seconds, args.gif)
        result = measure(args.golden, args.avatar, clip, args.delay)
    result.update(label=args.label, cpu=platform.processor() or platform.machine())
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
