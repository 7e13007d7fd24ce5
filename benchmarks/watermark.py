"""The watermark stage's cost: per engine row (:class:`WatermarkStage`), and on its own.

``python -m benchmarks.watermark`` times embedding the invisible watermark into a 256x256 frame
on one core (OpenCV limited to one thread), interleaved with a plain frame copy as the
baseline, plus detection on a 256x256 and a 1280x720 frame; it reports percentiles and the
process's CPU share. The budget is 2 ms per 256x256 frame on one core.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from engines.frames import output_to_image
from engines.watermark import Watermarker, detect

from .timing import summarize

#: Embedding budget per 256x256 frame on one CPU core, in milliseconds (issue 12).
BUDGET_MS = 2.0


class WatermarkStage:
    """Marks each frame of an engine's B x C x H x W prediction, as the live loop does, and
    times only the marking (the conversion to uint8 happens before the clock starts)."""

    def __init__(self, resolution: int, batch: int):
        self.marker = Watermarker(resolution)
        self.images = [np.empty((resolution, resolution, 3), np.uint8) for _ in range(batch)]
        self.scratch = np.empty((resolution, resolution, 3), np.float32)

    def run(self, prediction: np.ndarray) -> float:
        """Seconds spent marking the frames of ``prediction``."""
        for index, image in enumerate(self.images):
            output_to_image(prediction[index : index + 1], image, self.scratch)
        start = time.perf_counter()
        for image in self.images:
            self.marker.embed(image, image)
        return time.perf_counter() - start


def measure(iterations: int = 2000, warmup: int = 200, seed: int = 0) -> dict:
    """Interleaved timings (ms) of copy (baseline), embed and detect; one OpenCV thread."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 0), 3)
    out = np.empty_like(frame)
    wide = cv2.resize(frame, (1280, 720))
    marker = Watermarker(256)
    samples: dict[str, list[float]] = {"copy": [], "embed": [], "detect 256": []}
    detect_wide: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for index in range(warmup + iterations):
        t0 = time.perf_counter()
        np.copyto(out, frame)
        t1 = time.perf_counter()
        marker.embed(frame, out)
        t2 = time.perf_counter()
        if index >= warmup:
            samples["copy"].append((t1 - t0) * 1000)
            samples["embed"].append((t2 - t1) * 1000)
        if index % 20 == 0:
            t3 = time.perf_counter()
            detect(out)
            t4 = time.perf_counter()
            detect(wide)
            t5 = time.perf_counter()
            if index >= warmup:
                samples["detect 256"].append((t4 - t3) * 1000)
                detect_wide.append((t5 - t4) * 1000)
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    samples["detect 1280x720"] = detect_wide
    stats = {name: summarize(values) for name, values in samples.items()}
    return {
        "stats_ms": stats,
        "embed_over_copy": stats["embed"]["p50"] / stats["copy"]["p50"],
        "budget_ms": BUDGET_MS,
        "within_budget": stats["embed"]["p99"] <= BUDGET_MS,
        "cpu_share": cpu_share,
        "opencv_threads": cv2.getNumThreads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watermark", description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000, help="timed embeds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    result = measure(args.iterations)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'stage':<16} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, stats in result["stats_ms"].items():
        print(
            f"{name:<16} {stats['p50']:8.3f} {stats['p90']:8.3f} {stats['p99']:8.3f} "
            f"{stats['max']:8.3f}"
        )
    print(
        f"embed/copy p50 ratio {result['embed_over_copy']:.1f}x; embed p99 within the "
        f"{BUDGET_MS:g} ms budget: {result['within_budget']}; CPU share of this process "
        f"{result['cpu_share']:.2f}; OpenCV threads {result['opencv_threads']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
