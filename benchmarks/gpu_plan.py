"""How ``benchmarks.gpu_check`` spends a short GPU lease: its steps in order of value, a time
budget that covers builds, results on disk after every step, and an orderly end on SIGTERM,
SIGINT or a spent budget.

- Order: the latency reference and the baseline at the first batch; then per variant, in
  :func:`variant_rank` order (torch eager fp32 and fp16, CUDA graph, compiled, ONNX Runtime,
  TensorRT), its contract rows and its latency cell at the first batch; then the larger
  batches.
- Budget: a step whose estimate (the slowest step of its class seen in this run, else a
  default per class) does not fit in the time left is not started; its row says so. A step
  still running at the end of the budget is interrupted (SIGALRM raises :class:`Stopped` in
  the main thread); a watchdog thread writes the results and ends the process when even that
  does not return (a build inside a C call), ``GRACE_S`` later.
- Results: the document is rewritten (atomically: a temporary file, then a rename) after every
  step, with the list of steps not reached, so a run cut short at any moment leaves valid JSON
  and Markdown of what is done.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import Variant

GRACE_S = 5.0  # after the budget: how long an interrupted step may take to return
# Default estimates (seconds) per step class on a GPU, before one of the class has run here:
# engine start (export, build) plus the contract or the timed calls.
ESTIMATES_GPU = {
    "reference": 20.0,
    "baseline": 15.0,
    "torch": 15.0,
    "torch-cudagraph": 20.0,
    "torch-compile": 150.0,
    "onnxruntime": 90.0,
    "tensorrt": 300.0,
    "tensorrt-cudagraph": 300.0,
}
ESTIMATES_CPU = {"reference": 5.0, "baseline": 5.0, "torch": 5.0, "onnxruntime": 40.0}


class Stopped(BaseException):
    """Raised in the main thread to end the run: SIGTERM, SIGINT or the spent budget."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def variant_rank(variant: Variant) -> int:
    """Value order: torch eager, CUDA graph, compiled, ONNX Runtime, TensorRT (eager, then
    CUDA graph); fp32 before fp16 within each (by the caller's stable sort)."""
    if variant.backend == "torch":
        return 2 if variant.compiled else 1 if variant.cuda_graph else 0
    if variant.backend == "onnxruntime":
        return 3
    return 5 if variant.cuda_graph else 4


def step_class(variant: Variant) -> str:
    mode = "-cudagraph" if variant.cuda_graph else "-compile" if variant.compiled else ""
    return variant.backend + mode


@dataclass(frozen=True)
class Step:
    """One unit of work that leaves one row."""

    name: str  # e.g. "contract tiny64 torch-fp32", "latency torch-fp16 b1"
    kind: str  # estimate class (see ESTIMATES_GPU)
    run: Callable[[], None]  # does the work and appends its row
    skip: Callable[[str], None]  # appends a "skipped" row with the reason
    instant: Callable[[], bool] = lambda: False  # True: only writes a known skip (no budget)


class Writer:
    """Writes the results document as JSON and Markdown, atomically, from any thread."""

    def __init__(self, out: Path, document: Callable[[], dict[str, Any]]):
        self.out = out
        self.document = document
        self.lock = threading.Lock()

    def write(self, **extra: Any) -> dict[str, Any]:
        from .gpu_report import markdown

        with self.lock:
            results = {**self.document(), **extra}
            self.out.mkdir(parents=True, exist_ok=True)
            _atomic(self.out / "gpu_check.json", json.dumps(results, indent=2) + "\n")
            _atomic(self.out / "gpu_check.md", markdown(results))
            return results


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def stop_signals(
    deadline_s: float, on_stuck: Callable[[str], None] | None = None
) -> Iterator[None]:
    """SIGTERM and SIGINT, and SIGALRM after ``deadline_s`` seconds, raise Stopped in the main
    thread while the block runs (where signals exist; restored after).

    Python runs a signal handler only once the main thread is back in the interpreter, so a
    SIGTERM that arrives during a long C call (an ONNX export pass, a session build) would wait
    for it. The C-level handler also writes the signal's number to a wakeup socket at once,
    from any thread: a watcher thread reads it and, when the block has not ended ``GRACE_S``
    after a SIGTERM or SIGINT, calls ``on_stuck(why)``, which writes what is done and exits."""

    def handler(signum: int, frame: Any) -> None:
        name = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}.get(signum)
        raise Stopped(f"stopped by {name}" if name else "the time budget (--budget-s) ran out")

    wanted = [signal.SIGTERM, signal.SIGINT]
    alarm = hasattr(signal, "SIGALRM") and hasattr(signal, "setitimer")
    if alarm:
        wanted.append(signal.SIGALRM)
    saved = {sig: signal.signal(sig, handler) for sig in wanted}
    watcher = _SignalWatcher(on_stuck) if on_stuck is not None else None
    alarm = alarm and deadline_s > 0  # with no time left the plan starts nothing anyway
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, deadline_s)
    try:
        yield
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if watcher is not None:
            watcher.close()
        for sig, previous in saved.items():
            signal.signal(sig, previous)


class _SignalWatcher:
    """Learns of SIGTERM/SIGINT through ``signal.set_wakeup_fd`` (written by the C-level
    handler, so even while the main thread is inside a C call) and calls ``on_stuck`` when the
    main thread has not stopped ``GRACE_S`` later."""

    def __init__(self, on_stuck: Callable[[str], None]):
        self._ended = threading.Event()
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)  # the C handler must never block on it
        self._read.settimeout(0.2)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, args=(on_stuck,), daemon=True)
        self._thread.start()

    def _watch(self, on_stuck: Callable[[str], None]) -> None:
        names = {int(signal.SIGTERM): "SIGTERM", int(signal.SIGINT): "SIGINT"}
        while not self._ended.is_set():
            try:
                got = self._read.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            stops = [names[number] for number in got if number in names]
            if stops and not self._ended.wait(GRACE_S):
                on_stuck(f"stopped by {stops[0]} (during a call that did not return)")
                return

    def close(self) -> None:
        self._ended.set()
        signal.set_wakeup_fd(self._previous)
        self._thread.join(timeout=1)
        self._read.close()
        self._write.close()


class Watchdog:
    """Ends the process ``after_s`` from now with the results written, unless cancelled: for a
    step stuck where Python signal handlers cannot run (a C call)."""

    def __init__(self, after_s: float, writer: Writer, pending: Callable[[], list[str]]):
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(after_s, writer, pending), daemon=True
        )
        self._thread.start()

    def _watch(self, after_s: float, writer: Writer, pending: Callable[[], list[str]]) -> None:
        if self._done.wait(after_s):
            return
        writer.write(
            stopped="the watchdog: a step did not return after the time budget",
            not_reached=pending(),
        )
        print("gpu_check: time budget spent; results written, stopping", file=sys.stderr)
        os._exit(1)

    def cancel(self) -> None:
        self._done.set()


class Plan:
    """Runs steps in order within ``budget_s`` (from ``started``, a perf_counter time),
    writing after each."""

    def __init__(self, steps: list[Step], budget_s: float, started: float, cuda: bool):
        self.steps = steps
        self.budget_s = budget_s
        self.started = started
        self.defaults = ESTIMATES_GPU if cuda else ESTIMATES_CPU
        self.seen: dict[str, float] = {}  # slowest duration per class in this run
        self.index = 0  # the next step to run
        self.current: str | None = None

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def estimate(self, kind: str) -> float:
        return self.seen.get(kind, self.defaults.get(kind, self.defaults["torch"]))

    def pending(self) -> list[str]:
        """The steps not done: the one running (interrupted) and those after it."""
        names = [step.name for step in self.steps[self.index :]]
        if self.current is not None and names and names[0] == self.current:
            names[0] += " (interrupted while running)"
        return names

    def run(self, writer: Writer) -> None:
        """All steps; raises Stopped (from the signal handlers) with the document written."""
        writer.write(not_reached=self.pending())
        while self.index < len(self.steps):
            step = self.steps[self.index]
            need, left = self.estimate(step.kind), self.left()
            instant = step.instant()
            if need > left and not instant:
                step.skip(
                    f"time budget of {self.budget_s:g} s (--budget-s): needs about {need:.0f} s, "
                    f"{max(left, 0):.0f} s left; not started"
                )
            else:
                self.current = step.name
                begin = time.perf_counter()
                step.run()
                if not instant:  # a known skip says nothing about the time of its class
                    took = time.perf_counter() - begin
                    self.seen[step.kind] = max(self.seen.get(step.kind, 0.0), took)
                self.current = None
            self.index += 1
            writer.write(not_reached=self.pending())
