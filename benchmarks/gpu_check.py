"""Verify a GPU in one command: ``python -m benchmarks.gpu_check --out DIR [--shared PATH]``.

On a CUDA machine: the golden contract (:mod:`benchmarks.contract`) for every backend,
precision and mode that loads there (eager, CUDA graph, compiled), then the latency table on
the largest golden (p50/p99 per call at batch 1, frames/s at every batch) with the original
FOMM demo loop (eager PyTorch fp32, unsplit) measured in the same run as the baseline. Writes
``gpu_check.json`` and ``gpu_check.md`` into DIR and a short table to stdout.

Exit status: 0 when every result that ran is right; 1 when any is wrong or a backend that
loads fails; 2 without a usable CUDA GPU (one line) or with unusable arguments or data.
Needs only PyTorch, numpy, PyYAML, and for the ONNX Runtime rows onnx, onnxscript and
onnxruntime: no MediaPipe, pyvirtualcam, TensorRT or network. ``--device cpu --allow-cpu``
(hidden) runs the same logic on the CPU, for the tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from export.errors import UserError

from . import contract
from .contract import Variant
from .errors import BenchmarkError
from .gpu_runner import BATCHES, MIN_CALLS, WARMUP, GpuCheck, cuda_problem

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
    parser.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="default: %(default)s"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=200,
        help="timed calls at batch 1; batch B times iterations/B calls, at least "
        f"{MIN_CALLS} (default: %(default)s)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="checks (contract rows, then latency cells) that would start after this many "
        "seconds are skipped and reported (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="keep exported/built engines here (default: temporary)"
    )
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
        return found
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    names = {v.name: v for v in found}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise BenchmarkError(
            f"unknown variant(s) {unknown} for {args.device}: expected some of {sorted(names)}"
        )
    return [names[w] for w in wanted]


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """The whole check; the results document."""
    from .machine import machine_info, versions

    variants = _select(args)
    shared = args.shared or default_shared()
    goldens = [contract.load_golden_case(shared, g.strip()) for g in args.goldens.split(",")]
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="avatarcam-gpu-check-") as folder:
        check = GpuCheck(args, args.cache_dir or Path(folder))
        check.run_contract(goldens, variants)
        largest = max(goldens, key=lambda g: g.resolution)
        check.run_latency(largest, variants)
    if not any(row["status"] == "pass" for row in check.contract):
        check.problems.append("nothing was verified: no variant passed the contract here")
    return {
        "schema": SCHEMA,
        "timestamp": started.isoformat(timespec="seconds"),
        "duration_s": round(check.elapsed(), 1),
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
        "contract": check.contract,
        "latency": check.latency,
        "problems": check.problems,
        "ok": not check.problems,
    }


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
    if args.device.startswith("cuda"):
        problem = cuda_problem(args.device)
        if problem is not None:
            print(f"gpu_check: no usable CUDA GPU: {problem}.", file=sys.stderr)
            return 2
    elif args.device != "cpu" or not args.allow_cpu:
        print("gpu_check: --device must be cuda or cuda:N.", file=sys.stderr)
        return 2
    from .gpu_report import markdown, summary

    try:
        results = run_check(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "gpu_check.md").write_text(markdown(results))
    except UserError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    print(summary(results))
    print(f"results: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
