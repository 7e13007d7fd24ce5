"""Verify a GPU in one command: ``python -m benchmarks.gpu_check --out DIR [--shared PATH]``.

On a CUDA machine: the golden contract (:mod:`benchmarks.contract`) for every backend,
precision and mode that loads there (eager, CUDA graph, compiled), then the latency table on
the largest golden (p50/p99 per call at batch 1, frames/s at every batch) with the original
FOMM demo loop (eager PyTorch fp32, unsplit) measured in the same run as the baseline. Writes
``gpu_check.json`` and ``gpu_check.md`` into DIR and a short table to stdout.

Made for a short lease of a GPU machine (:mod:`benchmarks.gpu_plan`): the most valuable
checks first, nothing started that cannot finish within ``--budget-s``, the results files
rewritten after every row, and SIGTERM/SIGINT ending the run with what is done plus the list of
what was not reached. ``--quick`` gives the essential table (batch 1, no torch.compile, short
cells) in a few minutes. Engines are built into ``--cache-dir`` (default: the user's engine
cache), so a second try reuses them.

Exit status: 0 when every result that ran is right; 1 when any is wrong, a backend that
loads fails, or the run was stopped by a signal; 2 without a usable CUDA GPU (one line) or with
unusable arguments or data.
Needs only PyTorch, numpy, PyYAML, and for the ONNX Runtime rows onnx, onnxscript and
onnxruntime: no MediaPipe, pyvirtualcam, TensorRT or network. ``--device cpu --allow-cpu``
(hidden) runs the same logic on the CPU, for the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

from export.errors import UserError

from . import contract
from .contract import Variant
from .errors import BenchmarkError
from .gpu_plan import (
    GRACE_S,
    Plan,
    Step,
    Stopped,
    Watchdog,
    Writer,
    step_class,
    stop_signals,
    variant_rank,
)
from .gpu_runner import BATCHES, MIN_CALLS, WARMUP, GpuCheck, cuda_problem, skip_reason

QUICK_BUDGET_S = 210.0  # --quick: the essential table well within 4 minutes
QUICK_ITERATIONS = 50
QUICK_CELL_S = 3.0


def process_age_s() -> float:
    """Seconds since this process started (interpreter start-up and imports included), so
    that --budget-s bounds the whole command; 0 where /proc is missing."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(stat[19])  # field 22: starttime, in clock ticks since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


SCHEMA = "avatarcam-gpu-check/1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description="Verify a CUDA GPU: the golden contract of every backend, precision and "
        "mode that loads here, and the latency table against the original demo loop.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown")
    parser.add_argument(
        "--shared",
        type=Path,
        help="folder holding fomm/golden (default: $AVATARCAM_SHARED, else ../shared beside "
        "the checkout)",
    )
    parser.add_argument(
        "--goldens",
        default=",".join(contract.GOLDEN_NAMES),
        help="golden cases to check (default: %(default)s); latency runs on the largest",
    )
    parser.add_argument(
        "--variants", help="only these variants, e.g. torch-fp32,onnxruntime-fp16 (default: all)"
    )
    parser.add_argument("--batches", help=f"default: {','.join(map(str, BATCHES))} (--quick: 1)")
    parser.add_argument(
        "--iterations",
        type=int,
        help="timed calls at batch 1; batch B times iterations/B calls, at least "
        f"{MIN_CALLS} (default: 200; --quick: {QUICK_ITERATIONS})",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        help="the whole command ends within about this many seconds (plus a few to write): "
        "a step that would not finish in the time left is not started, one still running "
        f"is stopped (default: 420; --quick: {QUICK_BUDGET_S:g})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the essential table: batch 1, no torch.compile, short latency cells",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="forget remembered failures and measurements (a new try after a fix)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="exported/built engines, kept between tries (default: the user's engine cache)",
    )
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = QUICK_BUDGET_S if args.quick else 420.0
    if args.iterations is None:
        args.iterations = QUICK_ITERATIONS if args.quick else 200
    if args.batches is None:
        args.batches = "1" if args.quick else ",".join(map(str, BATCHES))
    try:
        args.batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches: expected numbers separated by commas, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1 or args.iterations < 1:
        parser.error("--batches and --iterations must be positive")
    return args


def default_shared() -> Path:
    """$AVATARCAM_SHARED, else the ``shared`` folder beside the checkout."""
    import os

    env = os.environ.get("AVATARCAM_SHARED")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared"


def _select(args: argparse.Namespace) -> list[Variant]:
    found = contract.variants(args.device)
    if not args.variants:
        return [v for v in found if not (args.quick and v.compiled)]
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    names = {v.name: v for v in found}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise BenchmarkError(
            f"unknown variant(s) {unknown} for {args.device}: expected some of {sorted(names)}"
        )
    return [names[w] for w in wanted]


def build_steps(check: GpuCheck, goldens: list[Any], variants: list[Variant]) -> list[Step]:
    """Every step of the run, in order of value (see :mod:`benchmarks.gpu_plan`)."""
    largest = max(goldens, key=lambda g: g.resolution)
    batches = list(check.args.batches)
    ordered = sorted(variants, key=variant_rank)

    def contract_step(golden: Any, variant: Variant) -> Step:
        known = skip_reason(variant, check.device) is not None

        def skip(why: str) -> None:
            row = {"golden": golden.name, "variant": variant.name, "backend": variant.backend}
            row.update(precision=variant.precision, cuda_graph=variant.cuda_graph)
            check.contract.append(
                {**row, "compiled": variant.compiled, "status": "skipped", "reason": why}
            )

        return Step(
            f"contract {golden.name} {variant.name}",
            step_class(variant),
            lambda: check.contract_step(golden, variant),
            skip,
            lambda: known,
        )

    def cell_step(variant: Variant | None, batch: int) -> Step:
        name = variant.name if variant is not None else "baseline"

        def skip(why: str) -> None:
            check.latency.append(
                {"variant": name, "batch": batch, "status": "skipped", "reason": why}
            )

        if variant is None:
            return Step(
                f"latency baseline b{batch}", "baseline", lambda: check.baseline_cell(batch), skip
            )
        return Step(
            f"latency {name} b{batch}",
            step_class(variant),
            lambda: check.variant_cell(variant, batch),
            skip,
            lambda: (largest.name, variant.name) not in check.passed,
        )

    steps = [
        Step(
            f"latency reference {largest.name}",
            "reference",
            lambda: check.prepare_reference(largest),
            lambda why: setattr(check, "no_reference", why),
        ),
        cell_step(None, batches[0]),
    ]
    for variant in ordered:
        steps += [contract_step(golden, variant) for golden in goldens]
        steps.append(cell_step(variant, batches[0]))
    for batch in batches[1:]:
        steps.append(cell_step(None, batch))
        steps += [cell_step(variant, batch) for variant in ordered]
    return steps


def run_check(args: argparse.Namespace) -> int:
    """The whole check, its results written into ``args.out`` as they come; the exit status."""
    from engines.cache import default_cache_dir

    from .gpu_report import summary
    from .machine import machine_info, versions

    variants = _select(args)
    shared = args.shared or default_shared()
    goldens = [contract.load_golden_case(shared, g.strip()) for g in args.goldens.split(",")]
    started = dt.datetime.now(dt.timezone.utc)
    cache_dir = args.cache_dir or default_cache_dir()
    check = GpuCheck(args, cache_dir)
    budget = args.budget_s - args.age_s  # from now
    if args.quick:
        check.cell_seconds = QUICK_CELL_S
    check.cell_seconds = min(check.cell_seconds, max(1.0, budget / 10))
    if args.remeasure:
        check.forget_failures()
    largest = max(goldens, key=lambda g: g.resolution)
    fixed = {
        "schema": SCHEMA,
        "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.gpu_check", *args.argv]),
        "device": args.device,
        "machine": machine_info(),
        "gpu": gpu_info(args.device),
        "versions": versions(),
        "settings": {
            "goldens": [g.name for g in goldens],
            "latency_golden": largest.name,
            "resolution": largest.resolution,
            "batches": list(args.batches),
            "iterations_batch1": args.iterations,
            "warmup": WARMUP,
            "budget_s": args.budget_s,
            "quick": args.quick,
            "cache_dir": str(cache_dir),
            "compile_supported": contract.compile_supported(),
            "motion": "relative, adapt-scale, reference = driving frame 0",
        },
        "tolerances": {
            "fp32_max_abs": contract.tolerance("fp32", args.device)["max_abs"],
            "fp32_mean_abs": contract.tolerance("fp32", args.device)["mean_abs"],
            "fp16_max_abs": contract.FP16_MAX,
            "fp16_mean_abs": contract.FP16_MEAN,
            "latency_vs_baseline": "2 x the fp32 bound for fp32 rows, the fp16 max for fp16",
        },
    }

    def document() -> dict[str, Any]:
        check.speedups()
        problems = list(check.problems)
        if not any(row["status"] == "pass" for row in check.contract):
            problems.append("nothing was verified: no variant passed the contract here")
        return {
            **fixed,
            "duration_s": round(check.elapsed(), 1),
            "contract": check.contract,
            "latency": check.latency,
            "problems": problems,
            "ok": not problems,
            "stopped": None,
            "not_reached": [],
        }

    writer = Writer(args.out, document)
    plan = Plan(build_steps(check, goldens, variants), budget, check.started, check.device != "cpu")
    watchdog = Watchdog(max(budget, 0.0) + GRACE_S, writer, plan.pending)
    stopped = None
    from export.tensorrt_build import set_build_deadline

    set_build_deadline(time.monotonic() + budget)  # TensorRT's own limit: its progress monitor
    try:
        with stop_signals(budget, on_stuck=lambda why: _stuck(writer, plan, why)):
            plan.run(writer)
    except Stopped as exc:
        stopped = exc.why
        log_stop = f"gpu_check: {stopped}; results so far written"
        print(log_stop, file=sys.stderr)
    finally:
        watchdog.cancel()
        set_build_deadline(None)
    results = writer.write(stopped=stopped, not_reached=plan.pending() if stopped else [])
    print(summary(results))
    print(f"results: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    signalled = stopped is not None and stopped.startswith("stopped by")
    return 0 if results["ok"] and not signalled else 1


def _stuck(writer: Writer, plan: Plan, why: str) -> None:
    """A signal arrived while a step sat in a C call: write what is done, then exit at once."""
    writer.write(stopped=why, not_reached=plan.pending())
    print(f"gpu_check: {why}; results so far written", file=sys.stderr, flush=True)
    os._exit(1)


def gpu_info(device: str) -> dict[str, Any] | None:
    """Name, memory and compute capability of the GPU, None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"sm_{props.major}{props.minor}",
        "torch_cuda": torch.version.cuda,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the results' command
    # As a command, the budget counts from the process start (imports included).
    args.age_s = process_age_s() if argv is None else 0.0
    if args.device.startswith("cuda"):
        problem = cuda_problem(args.device)
        if problem is not None:
            print(f"gpu_check: no usable CUDA GPU: {problem}.", file=sys.stderr)
            return 2
    elif args.device != "cpu" or not args.allow_cpu:
        print("gpu_check: --device must be cuda or cuda:N.", file=sys.stderr)
        return 2
    try:
        return run_check(args)
    except UserError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
