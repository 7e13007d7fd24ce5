"""``benchmarks.gpu_check`` on a short lease: the whole command within its --budget-s with a
latency row, valid results after SIGTERM, the order of value, and the plan's budget rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_plan
from benchmarks.contract import Variant
from tests.conftest import ROOT, SHARED, shared_path

COMMAND = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--allow-cpu"]


def _start(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    shared_path("fomm", "golden", "vox-small256.npz")
    args = [*COMMAND, *extra, "--shared", str(SHARED), "--cache-dir", str(cache), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_the_budget_bounds_the_whole_command(tmp_path: Path) -> None:
    begin = time.monotonic()
    process = _start(tmp_path / "out", tmp_path / "cache", "--budget-s", "40")
    output, _ = process.communicate(timeout=120)
    took = time.monotonic() - begin
    assert took < 50, (took, output[-2000:])
    assert process.returncode == 0, output[-2000:]
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    ok = [c for c in results["latency"] if c["status"] == "ok"]
    assert ok and ok[0]["variant"] == "baseline" and ok[0]["batch"] == 1
    assert any(c["variant"] == "torch-fp32" and c["status"] == "ok" for c in results["latency"])
    # What did not fit says so, and a step cut off at the budget is listed as not reached.
    assert all(
        "time budget" in (row.get("reason") or "")
        or row["status"] in ("pass", "ok")
        or row.get("reason", "").startswith("contract on")
        for row in [*results["contract"], *results["latency"]]
    )
    assert "## Latency" in (tmp_path / "out" / "gpu_check.md").read_text()


def _done(results: dict) -> list[dict]:
    rows = [*results["contract"], *results["latency"]]
    return [row for row in rows if row["status"] not in ("skipped",)]


@pytest.mark.slow
def test_sigterm_leaves_valid_results_of_the_rows_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The tiny golden: its torch rows take seconds, the ONNX export after them is cut off.
    tiny = ("--goldens", "tiny64", "--iterations", "20")
    process = _start(out, tmp_path / "cache", "--budget-s", "300", *tiny)
    # SIGTERM at 20 s, or later on a loaded machine: once a row is done (the file is rewritten
    # atomically after every row, so it is always valid JSON).
    begin, before = time.monotonic(), []
    while time.monotonic() - begin < 120 and process.poll() is None:
        time.sleep(1)
        if time.monotonic() - begin >= 20 and (out / "gpu_check.json").exists():
            before = _done(json.loads((out / "gpu_check.json").read_text()))
            if before:
                break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert before, output[-2000:]
    assert process.returncode == 1, output[-2000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["stopped"] == "stopped by SIGTERM"
    assert results["not_reached"], results
    done = _done(results)
    assert done[: len(before)] == before  # nothing done is lost
    names = {f"latency {c['variant']} b{c['batch']}" for c in results["latency"]}
    reached = {n.removesuffix(" (interrupted while running)") for n in results["not_reached"]}
    assert not names & reached
    assert "steps not reached" in (out / "gpu_check.md").read_text()


def test_variants_in_order_of_value() -> None:
    from benchmarks import contract

    ordered = sorted(contract.variants("cuda"), key=gpu_plan.variant_rank)
    assert [v.name for v in ordered] == [
        "torch-fp32",
        "torch-fp16",
        "torch-fp32-cudagraph",
        "torch-fp16-cudagraph",
        "torch-fp32-compile",
        "torch-fp16-compile",
        "onnxruntime-fp32",
        "onnxruntime-fp16",
        "tensorrt-fp32",
        "tensorrt-fp16",
        "tensorrt-fp32-cudagraph",
        "tensorrt-fp16-cudagraph",
    ]


def test_a_step_that_cannot_finish_is_not_started_and_known_skips_cost_nothing(
    tmp_path: Path,
) -> None:
    ran: list[str] = []
    skipped: list[tuple[str, str]] = []

    def step(name: str, kind: str, instant: bool = False, seconds: float = 0.0) -> gpu_plan.Step:
        def run() -> None:
            time.sleep(seconds)
            ran.append(name)

        return gpu_plan.Step(
            name, kind, run, lambda why: skipped.append((name, why)), lambda: instant
        )

    steps = [
        step("a", "torch", seconds=0.05),
        step("known skip", "tensorrt", instant=True),
        step("b", "torch"),
        step("build", "tensorrt"),  # default estimate: minutes, does not fit
    ]
    plan = gpu_plan.Plan(steps, budget_s=5.0, started=time.perf_counter(), cuda=True)
    plan.defaults = {**plan.defaults, "torch": 1.0}
    writes: list[list[str]] = []
    writer = gpu_plan.Writer(tmp_path, lambda: {})
    writer.write = lambda **extra: writes.append(extra["not_reached"]) or {}
    plan.run(writer)
    assert ran == ["a", "known skip", "b"]
    assert 0.05 <= plan.estimate("torch") < 1.0  # learned from this run, known skips not
    assert skipped[0][0] == "build" and "needs about 300 s" in skipped[0][1]
    assert writes[0] == ["a", "known skip", "b", "build"] and writes[-1] == []
    assert len(writes) == len(steps) + 1  # after every step


def test_variant_classes() -> None:
    assert gpu_plan.step_class(Variant("torch", "fp16", compiled=True)) == "torch-compile"
    assert gpu_plan.step_class(Variant("tensorrt", "fp16", cuda_graph=True)) == "tensorrt-cudagraph"


STUCK_IN_C = """
import hashlib, os, sys
from benchmarks.gpu_plan import stop_signals

def stuck(why):
    print("on_stuck:", why, flush=True)
    os._exit(3)

with stop_signals(600, on_stuck=stuck):
    print("ready", flush=True)
    hashlib.pbkdf2_hmac("sha256", b"p", b"s", 400_000_000)  # one C call of a minute or more
print("returned", flush=True)
"""


def test_a_signal_during_a_long_c_call_still_ends_the_run(tmp_path: Path) -> None:
    # Python runs its handler only between bytecodes; the wakeup-fd watcher must not wait for
    # the C call to return.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_IN_C], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    took = time.monotonic() - sent
    assert process.returncode == 3, output
    assert "on_stuck: stopped by SIGTERM" in output
    assert took < gpu_plan.GRACE_S + 10, took
