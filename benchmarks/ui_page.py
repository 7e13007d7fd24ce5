"""The live loop's frame rate with the control page open in a browser vs not (``--ui``).

    python -m benchmarks.ui_page [--golden vox-small256] [--backend onnxruntime]
                                 [--timing paced offline] [--seconds 8] [--rounds 3]

Each run is the real pipeline (:func:`live.app.run` with ``--ui``) on the talking-head clip
repeated to a few seconds: ``paced`` plays it at its rate like a camera (the question: does the
loop still keep the input's rate?), ``offline`` processes every frame as fast as it can (the
stress case: every cycle the browser's side takes is missing from the loop). Variants
alternate within each round: ``closed`` (page served, no browser) and ``open`` (headless
Chromium showing the page: MJPEG live view and state polling). After a warm-up the frame rate
is the frames the loop sent in the timed window over its length; frame intervals give p50/p90.
The CPU share (:mod:`benchmarks.cpushare`) says how much of the machine the loop's process got;
Chromium counts as "others".
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from .cpushare import between, snapshot
from .machine import cpu_model, usable_cores

WARMUP_S = 3.0
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


def _clip(folder: Path, seconds: float, fps: int, shared: Path) -> Path:
    import av
    from PIL import Image, ImageSequence

    with Image.open(shared / "media" / "driving" / "mona-talking.gif") as gif:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    height, width = (s - s % 2 for s in frames[0].shape[:2])
    path = folder / f"clip-{fps}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            image = frames[i % len(frames)][:height, :width]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _browser(url: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMIUM[1]))
    driver.get(url)
    return driver


class _UrlCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.url: str | None = None
        self.ready = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("control page: "):
            self.url = message.removeprefix("control page: ")
            self.ready.set()


def _one_run(args: argparse.Namespace, clip: Path, avatars: Path, timing: str, open_page: bool):
    from engines.options import EngineOptions
    from live.app import run
    from live.controls import Action
    from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions
    from live.ui.options import UiOptions

    folder = args.shared / "fomm" / "golden"
    options = RunOptions(
        avatar=avatars,
        capture=CaptureOptions(input=str(clip), timing=timing),
        output=OutputOptions(virtual_camera=False, preview=False),
        model=ModelOptions(
            checkpoint=folder / f"{args.golden}.pth.tar",
            config=str(folder / f"{args.golden}.yaml"),
            resolution=64 if args.golden == "tiny64" else 256,
        ),
        engine=EngineOptions(backend=args.backend),
        ui=UiOptions(port=0, open_browser=False),
    )
    times: list[float] = []
    loops: list = []

    def on_frame(record, loop) -> None:
        times.append(time.perf_counter())
        if not loops:
            loops.append(loop)

    catcher = _UrlCatcher()
    logger = logging.getLogger("avatarcam")
    logger.addHandler(catcher)
    logger.setLevel(logging.INFO)
    thread = threading.Thread(target=run, args=(options, on_frame), daemon=True)
    thread.start()
    driver = None
    try:
        if not catcher.ready.wait(120):
            raise RuntimeError("the control page did not start")
        if open_page:
            driver = _browser(catcher.url or "")
        while not times:
            time.sleep(0.05)
        time.sleep(WARMUP_S)
        start, first = snapshot(), len(times)
        time.sleep(args.seconds)
        end, last = snapshot(), len(times)
        view_delay = None
        if open_page:
            import urllib.request

            state_url = (catcher.url or "").replace("/?token=", "/api/state?token=")
            with urllib.request.urlopen(state_url, timeout=10) as response:
                view_delay = json.load(response).get("view_delay_ms")
        loops[0].post(Action.QUIT)
        thread.join(30)
    finally:
        logger.removeHandler(catcher)
        if driver is not None:
            driver.quit()
    window = [t for t in times if start.wall <= t <= end.wall]
    intervals = np.diff(window) * 1000
    return {
        "fps": round((last - first) / (end.wall - start.wall), 2),
        "interval_ms_p50": round(float(np.percentile(intervals, 50)), 1),
        "interval_ms_p90": round(float(np.percentile(intervals, 90)), 1),
        "view_delay_ms": view_delay,
        **between(start, end),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui_page", description=__doc__)
    parser.add_argument("--golden", default="vox-small256", choices=("tiny64", "vox-small256"))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--timing", nargs="+", default=["paced", "offline"])
    parser.add_argument("--fps", type=int, default=25, help="the clip's rate (paced runs)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed window per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shared", type=Path, default=Path(__file__).parent.parent / "../shared")
    args = parser.parse_args(argv)
    import shutil

    rows = []
    with TemporaryDirectory() as tmp:
        folder = Path(tmp)
        avatars = folder / "avatars"
        avatars.mkdir()
        for name in ("einstein.jpg", "obama.jpg"):
            shutil.copy(args.shared / "media" / "avatars" / name, avatars / name)
        clip = _clip(folder, WARMUP_S + args.seconds + 20, args.fps, args.shared)
        for timing in args.timing:
            results: dict[str, list[dict]] = {"closed": [], "open": []}
            for round_ in range(args.rounds):
                order = ("closed", "open") if round_ % 2 == 0 else ("open", "closed")
                for variant in order:
                    result = _one_run(args, clip, avatars, timing, variant == "open")
                    results[variant].append(result)
                    print(json.dumps({"timing": timing, "variant": variant, **result}), flush=True)
            closed = statistics.median(r["fps"] for r in results["closed"])
            opened = statistics.median(r["fps"] for r in results["open"])
            # Frames per CPU second the loop's process got: what the page costs the process,
            # less sensitive to how much of a shared machine a run happened to get.
            per_cpu = {
                v: statistics.median(r["fps"] / r["own_cores"] for r in rs if r["own_cores"])
                for v, rs in results.items()
            }
            rows.append(
                {
                    "timing": timing,
                    "fps_closed_median": closed,
                    "fps_open_median": opened,
                    "open_vs_closed": round(opened / closed, 3) if closed else None,
                    "frames_per_cpu_s_closed": round(per_cpu["closed"], 1),
                    "frames_per_cpu_s_open": round(per_cpu["open"], 1),
                    "per_cpu_open_vs_closed": round(per_cpu["open"] / per_cpu["closed"], 3),
                    "runs": results,
                }
            )
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "")
        flags = " ".join(f for f in line.split() if f.startswith(("avx", "amx", "fma")))
    summary = {
        "cpu": cpu_model(),
        "vector_extensions": flags,
        "usable_cores": usable_cores(),
        "golden": args.golden,
        "backend": args.backend,
        "clip_fps": args.fps,
        "rows": [{k: v for k, v in row.items() if k != "runs"} for row in rows],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
