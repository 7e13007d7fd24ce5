"""Whether ``--backend auto`` compiles the torch backend: measured once per model, GPU and
PyTorch version, and kept in the engine cache (:func:`engines.verdict.measured_once`).

The measurement times the frame call of the eager and the compiled engine (after warm-up,
synchronized, median of ``FRAMES`` calls) and compiles only when the compiled one is at least
``MIN_SPEEDUP`` faster. Like is compared with like: inductor's ``reduce-overhead`` mode replays
CUDA graphs, so the eager engine measured against it captures its frame call in a CUDA graph
too. A compile that fails is a verdict as well ("eager", with the error), kept until the
versions change or the user asks for ``--remeasure``. On the CPU, ``auto`` does not try
compiling (inductor takes minutes there and ONNX Runtime is the faster CPU path);
``--compile`` asks for it explicitly.

This module does not import the torch backend: :mod:`engines.torch_engine` passes the engine
factory in.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from export.iospec import ModelIO

from .device import Device
from .verdict import measured_once

FRAMES = 30  # timed frame calls per variant
MIN_SPEEDUP = 1.05  # compiled must be this much faster to be picked
FILE = "measurement.json"
FORMAT = 2  # bump when what is measured changes (2: eager with a CUDA graph; failures kept)


def time_frame_calls(engine: Any, frames: int = FRAMES) -> float:
    """Median seconds of one frame call of ``engine`` (a TorchEngine, through its own frame
    path, so a CUDA graph replays), after warm-up."""
    engine.warm_up()
    frame = engine.io.frame
    feeds = {
        t.name: torch.zeros(t.shape, dtype=torch.float32, device=engine._dev) for t in frame.inputs
    }
    times = []
    for _ in range(frames + 3):  # the first calls capture the CUDA graph
        start = time.perf_counter()
        engine._execute(frame, feeds)
        if engine._dev.type == "cuda":
            torch.cuda.synchronize(engine._dev)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def measure_variants(make: Callable[[bool], Any]) -> dict[str, Any]:
    """Seconds per frame call, eager (``make(False)``) and compiled (``make(True)``), measured
    in one run; a compiled engine that fails to build or run gives ``error`` instead."""
    result: dict[str, Any] = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        try:
            engine = make(compiled)
        except Exception as exc:
            if not compiled:
                raise
            result["error"] = _first_line(exc)
            break
        try:
            result[name] = time_frame_calls(engine)
        except Exception as exc:
            if not compiled:
                raise
            result["error"] = _first_line(exc)
        finally:
            engine.close()
    return result


def decide(measurement: dict[str, Any]) -> tuple[bool, str]:
    """Compile when measured at least MIN_SPEEDUP faster; the reason in words."""
    if "error" in measurement:
        return False, f"torch.compile failed here ({measurement['error']}); running eager"
    eager, compiled = measurement["eager"], measurement["compiled"]
    speedup = eager / compiled if compiled > 0 else 0.0
    timing = f"{compiled * 1e3:.2f} ms vs {eager * 1e3:.2f} ms eager per frame call"
    if speedup >= MIN_SPEEDUP:
        return True, f"torch.compile picked: measured {speedup:.2f}x faster ({timing})"
    return False, f"torch.compile not used: measured {speedup:.2f}x of eager ({timing})"


def choose_compile(
    io: ModelIO,
    precision: str,
    device: Device,
    cache: Any,
    checkpoint: str | Path,
    measure: Callable[[], dict[str, Any]],
    remeasure: bool = False,
) -> tuple[bool, str]:
    """(compile?, why) for ``--backend auto``: ``measure()`` (see :func:`measure_variants`)
    once, then read from the cache."""
    if not device.is_cuda:
        return False, (
            "torch.compile not tried by --backend auto on the CPU (compiling takes minutes "
            "there); ask for it with --compile"
        )
    if cache is None:
        return decide(measure())
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
        "format": FORMAT,
    }
    label = f"{io.resolution}px-b{io.batch}-{precision}"
    verdict = measured_once(
        cache,
        "torch-compile",
        label,
        key,
        measure,
        "torch.compile measurement",
        remeasure,
        file=FILE,
    )
    use, why = decide(verdict.result)
    if verdict.cached:
        return use, why + " (measured once, kept in the engine cache; --remeasure redoes it)"
    return use, why + " (measured now, kept in the engine cache)"
