"""``--backend auto`` on a CPU: OpenVINO or ONNX Runtime, whichever is faster here, measured.

Which runtime wins depends on the CPU (instruction sets, cores, cache) and the runtimes'
versions, so ``auto`` measures once: both engines start (their artifacts are cached anyway),
then run the frame graph in turn, interleaved, and the faster median wins. The result is
cached beside the engines (:mod:`engines.cache`, kind ``selection``), keyed by the model's
shapes, precision, CPU, threads and runtime versions, so later starts do not measure again;
the selection reason quotes the numbers (:func:`engines.verdict.measured_once`).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from export.iospec import ModelIO

from .base import Engine
from .verdict import measured_once

log = logging.getLogger(__name__)

WARMUP = 1  # untimed frame calls per engine
ROUNDS = 4  # timed frame calls per engine, interleaved
RESULT = "timings.json"


@dataclass(frozen=True)
class Ranking:
    """Backends fastest first, with the measurement behind the order."""

    order: tuple[str, ...]  # backends, fastest first (failed ones last)
    ms: dict[str, float]  # median ms per frame call, by backend that ran
    failed: dict[str, str]  # backend -> why it could not be measured
    measured_at: str  # when (local time), for the reason text
    cached: bool  # True when read from the cache, not measured by this call

    def reason(self) -> str:
        """``openvino 348 ms vs onnxruntime 407 ms per frame (1.17x), measured ...``."""
        parts = [f"{b} {self.ms[b]:.0f} ms" for b in self.order if b in self.ms]
        text = " vs ".join(parts) + " per frame"
        ran = [b for b in self.order if b in self.ms]
        if len(ran) >= 2:
            text += f" ({self.ms[ran[1]] / self.ms[ran[0]]:.2f}x)"
        for backend, why in self.failed.items():
            text += f"; {backend} could not run ({why})"
        when = "cached measurement" if self.cached else "measured now"
        return f"{text}; {when} from {self.measured_at}"


def _inputs(io: ModelIO) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    avatar = rng.random(io.avatar.tensor("avatar").shape, dtype=np.float32)
    driving = rng.random(io.frame.tensor("driving").shape, dtype=np.float32)
    return avatar, driving


def measure(
    backends: Sequence[str], start: Callable[[str], Engine], io: ModelIO
) -> tuple[dict[str, float], dict[str, str]]:
    """Median ms per frame call of each backend that starts (interleaved rounds)."""
    engines: dict[str, Engine] = {}
    failed: dict[str, str] = {}
    avatar, driving = _inputs(io)
    try:
        for backend in backends:
            try:
                engine = start(backend)
                engine.set_avatar(avatar)
                for _ in range(WARMUP):
                    engine.animate(driving)
            except Exception as exc:  # the selection loop reports it when it tries this one
                text = str(exc).strip().splitlines()
                failed[backend] = f"{type(exc).__name__}: {text[0] if text else ''}"
                continue
            engines[backend] = engine
        times: dict[str, list[float]] = {b: [] for b in engines}
        for _ in range(ROUNDS):
            for backend, engine in engines.items():
                t0 = time.perf_counter()
                engine.animate(driving)
                times[backend].append((time.perf_counter() - t0) * 1000)
    finally:
        for engine in engines.values():
            engine.close()
    return {b: statistics.median(t) for b, t in times.items()}, failed


def cpu_ranking(
    cache: Any,
    key: dict[str, Any],
    backends: Sequence[str],
    start: Callable[[str], Engine],
    io: ModelIO,
    label: str,
    remeasure: bool = False,
) -> Ranking:
    """The cached ranking of ``backends`` for ``key``, measured on a miss (or ``remeasure``).
    A ranking in which a backend failed is used for this start only, not kept: a backend that
    failed once is not ranked last for ever."""

    def run() -> dict[str, Any]:
        print(
            f"avatarcam: --backend auto is measuring {' and '.join(backends)} on this CPU "
            "(once; the result is cached) ...",
            file=sys.stderr,
            flush=True,
        )
        ms, failed = measure(backends, start, io)
        if not ms:
            raise RuntimeError("no CPU backend could be measured: " + "; ".join(failed.values()))
        order = tuple(sorted(ms, key=ms.__getitem__)) + tuple(b for b in backends if b not in ms)
        ranking = Ranking(order, ms, failed, time.strftime("%Y-%m-%d %H:%M"), False)
        return {k: v for k, v in asdict(ranking).items() if k != "cached"}

    verdict = measured_once(
        cache,
        "selection",
        label,
        key,
        run,
        "backend measurement",
        remeasure,
        keep=lambda result: not result["failed"],
        file=RESULT,
    )
    data = verdict.result
    return Ranking(
        tuple(data["order"]),
        {k: float(v) for k, v in data["ms"].items()},
        dict(data["failed"]),
        str(data["measured_at"]),
        verdict.cached,
    )
