"""Whether ``--backend auto`` compiles the torch backend: measured once per model, GPU and
PyTorch version, and kept in the engine cache.

The measurement times the frame call of the eager and the compiled engine (after warm-up,
synchronized, median of ``FRAMES`` calls) and compiles only when the compiled one is at least
``MIN_SPEEDUP`` faster. On the CPU, ``auto`` does not try compiling (inductor takes minutes
there and ONNX Runtime is the faster CPU path); ``--compile`` asks for it explicitly.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from export.iospec import ModelIO

from .device import Device

FRAMES = 30  # timed frame calls per variant
MIN_SPEEDUP = 1.05  # compiled must be this much faster to be picked
FILE = "measurement.json"


def time_frame_calls(engine: Any, frames: int = FRAMES) -> float:
    """Median seconds of one frame call of ``engine`` (a TorchEngine), after warm-up."""
    engine.warm_up()
    frame = engine.io.frame
    feeds = {
        t.name: torch.zeros(t.shape, dtype=torch.float32, device=engine._dev) for t in frame.inputs
    }
    inputs = [feeds[n] for n in frame.input_names]
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        with engine._settings():
            engine._call(frame, inputs)
        if engine._dev.type == "cuda":
            torch.cuda.synchronize(engine._dev)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: Any, io: ModelIO, precision: str, device: Device) -> dict[str, float]:
    """Seconds per frame call, eager and compiled, measured in one run."""
    from .torch_engine import TorchEngine

    result = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        engine = TorchEngine(model, io, precision, device, compile=compiled)
        try:
            result[name] = time_frame_calls(engine)
        finally:
            engine.close()
    return result


def decide(measurement: dict[str, float]) -> tuple[bool, str]:
    """Compile when measured at least MIN_SPEEDUP faster; the reason in words."""
    eager, compiled = measurement["eager"], measurement["compiled"]
    speedup = eager / compiled if compiled > 0 else 0.0
    timing = f"{compiled * 1e3:.2f} ms vs {eager * 1e3:.2f} ms eager per frame call"
    if speedup >= MIN_SPEEDUP:
        return True, f"torch.compile picked: measured {speedup:.2f}x faster ({timing})"
    return False, f"torch.compile not used: measured {speedup:.2f}x of eager ({timing})"


def choose_compile(
    model: Any,
    io: ModelIO,
    precision: str,
    device: Device,
    cache: Any,
    checkpoint: str | Path,
) -> tuple[bool, str]:
    """(compile?, why) for ``--backend auto``: measured once, then read from the cache."""
    if not device.is_cuda:
        return False, (
            "torch.compile not tried by --backend auto on the CPU (compiling takes minutes "
            "there); ask for it with --compile"
        )
    if cache is None:
        return decide(measure(model, io, precision, device))
    index = device.ordinal
    key = {
        "checkpoint_sha256": cache.checkpoint_digest(checkpoint),
        "resolution": io.resolution,
        "batch": io.batch,
        "precision": precision,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(index),
        "capability": list(torch.cuda.get_device_capability(index)),
        "frames": FRAMES,
    }

    def build(folder: Path) -> None:
        (folder / FILE).write_text(json.dumps(measure(model, io, precision, device)))

    label = f"{io.resolution}px-b{io.batch}-{precision}"
    entry = cache.get_or_build(
        "torch-compile", label, key, [FILE], build, "torch.compile measurement"
    )
    use, why = decide(json.loads(entry.file(FILE).read_text()))
    return use, why + " (measured once, kept in the engine cache)"
