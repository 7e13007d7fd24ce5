"""Wall-clock timing with device synchronisation, and latency summaries.

On a CUDA device every timestamp is taken after ``torch.cuda.synchronize`` so that queued
kernels are counted in the stage that launched them; on the CPU ``time.perf_counter`` alone is
exact. Percentiles use linear interpolation, so p50 <= p90 <= p99 <= max always holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


class Clock:
    """Timestamps in seconds, taken after the device has finished its queued work."""

    def __init__(self, device: str):
        import torch

        self.device = device  # "cpu" or "cuda[:N]"
        # An ONNX Runtime or TensorRT engine may run on a GPU that a CPU build of PyTorch
        # cannot see; such engines copy their outputs to the host, which waits for them.
        self._cuda = device.startswith("cuda") and torch.cuda.is_available()

    def sync(self) -> None:
        """Wait for the device to finish everything queued so far."""
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        """A timestamp (seconds) that counts all work queued before it."""
        self.sync()
        return time.perf_counter()


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/min/mean of latency samples in milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples to summarize")
    summary = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    summary["max"] = float(values.max())
    summary["min"] = float(values.min())
    summary["mean"] = float(values.mean())
    return summary


@dataclass(frozen=True)
class Step:
    """What one timed call produced."""

    prediction: np.ndarray | None  # B x C x H x W on the host, or None when not checked
    durations_s: dict[str, float]  # stage name ("frame", "keypoints", "generator") -> seconds


def run_calls(
    warmup: int,
    iterations: int,
    prepare: Callable[[int], object],
    step: Callable[[object], Step],
    check: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, list[float]]:
    """Run ``warmup`` then ``iterations`` calls; return timed durations in ms by stage name.

    ``prepare(call_index)`` builds a call's inputs outside the timed region; ``step`` times
    itself (with a :class:`Clock`) and returns its prediction; ``check(call_index,
    prediction)`` runs after the timed call, outside the timed region, on every call
    (warm-up included) that returned a prediction.
    """
    samples: dict[str, list[float]] = {}
    for index in range(warmup + iterations):
        inputs = prepare(index)
        result = step(inputs)
        if index >= warmup:
            for name, seconds in result.durations_s.items():
                samples.setdefault(name, []).append(seconds * 1000.0)
        if check is not None and result.prediction is not None:
            check(index, result.prediction)
    return samples
