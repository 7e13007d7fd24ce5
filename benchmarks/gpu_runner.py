"""The two stages of ``benchmarks.gpu_check``: the golden contract of every variant, then the
latency of those that passed, against the original FOMM demo loop measured in the same run.

Every latency cell's predictions are compared with the baseline's predictions of the same
driving frames, so a row can never look fast by computing something else.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import MissingDependencyError, UserError

from . import contract
from .contract import GoldenCase, Variant
from .gpu_skips import NO_ORT_GPU, NO_TENSORRT, cuda_problem, skip_reason

__all__ = ["NO_ORT_GPU", "NO_TENSORRT", "GpuCheck", "cuda_problem", "skip_reason", "start_engine"]

BATCHES = (1, 4, 16, 64)
WARMUP = 3  # untimed calls per cell: CUDA-graph capture, cuDNN autotuning, lazy allocations
MIN_CALLS = 5  # a cell stops early on its time limit only after this many timed calls
CELL_SECONDS = 10.0  # time limit of one latency cell's timed calls


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_engine(
    golden: GoldenCase, variant: Variant, device: str, batch: int, cache_dir: Path
) -> Any:
    """Start ``variant`` for ``golden`` (the tests replace this to inject a wrong engine)."""
    from engines import create_engine

    return create_engine(
        golden.checkpoint, golden.config, variant.options(device, batch, cache_dir)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _no_reference(name: str, batch: int, why: str) -> dict[str, Any]:
    reason = f"the latency reference was not computed ({why})"
    return {"variant": name, "batch": batch, "status": "skipped", "reason": reason}


def _max_error(
    prediction: np.ndarray, frames: list[int], reference: dict[int, np.ndarray]
) -> float:
    """Largest absolute difference of a batch of predictions from the reference frames (inf
    for NaN or inf outputs)."""
    worst = 0.0
    for b, frame in enumerate(frames):
        diff = float(np.abs(prediction[b] - reference[frame]).max())
        worst = max(worst, diff if np.isfinite(diff) else np.inf)
    return worst


def _runs_as_asked(engine: Any, variant: Variant, device: str) -> str | None:
    if engine.backend != variant.backend or engine.precision != variant.precision:
        return f"asked for {variant.name}, got {engine.describe()}"
    if not engine.device.startswith(device.split(":")[0]):
        return f"asked for {device}, runs on {engine.device}"
    return None


class GpuCheck:
    """The steps of one run (:mod:`benchmarks.gpu_plan` orders and times them): contract rows,
    the latency reference, baseline and variant cells. Results accumulate in ``contract``,
    ``latency`` and ``problems``."""

    def __init__(self, args: argparse.Namespace, cache_dir: Path):
        self.args = args
        self.device: str = args.device
        self.cache_dir = cache_dir
        self.started = time.perf_counter()
        self.contract: list[dict[str, Any]] = []
        self.latency: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.passed: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (golden, variant)
        self.cell_seconds = CELL_SECONDS  # time limit of one cell's timed calls
        self.latency_golden: GoldenCase | None = None
        self.no_reference = "not reached"  # why there is no latency reference (yet)
        self.reference: dict[int, np.ndarray] = {}  # driving frame -> baseline prediction
        self._frames = np.zeros((1,))
        self._source = np.zeros((1,))
        self._model: Any = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def forget_failures(self) -> None:
        """--remeasure: forget the failures remembered in the engine cache (failed provider
        sets, failed builds)."""
        from engines.cache import FAILED
        from engines.failures import FILE

        root = Path(self.cache_dir)
        (root / FILE).unlink(missing_ok=True)
        for path in root.glob(f"*/*{FAILED}"):
            path.unlink(missing_ok=True)

    # --- contract ----------------------------------------------------------------------------

    def check_variant(self, golden: GoldenCase, variant: Variant) -> dict[str, Any]:
        row: dict[str, Any] = {"golden": golden.name, "variant": variant.name}
        row.update(backend=variant.backend, precision=variant.precision)
        row.update(cuda_graph=variant.cuda_graph, compiled=variant.compiled)
        skip = skip_reason(variant, self.device)
        if skip is not None:
            return {**row, "status": "skipped", "reason": skip[0], "fix": skip[1]}
        begin = time.perf_counter()
        try:
            engine = start_engine(golden, variant, self.device, 1, self.cache_dir)
        except MissingDependencyError as exc:
            return {**row, "status": "skipped", "reason": _first_line(exc)}
        except Exception as exc:
            return {**row, "status": "error", "reason": f"could not start: {_first_line(exc)}"}
        try:
            row.update(engine=engine.describe(), setup_s=round(time.perf_counter() - begin, 2))
            row["selection_reason"] = engine.selection_reason
            wrong = _runs_as_asked(engine, variant, self.device)
            if wrong is not None:
                return {**row, "status": "fail", "reason": wrong}
            outputs = contract.contract_outputs(engine, golden)
            if variant.precision == "fp16" and self.device.startswith("cuda"):
                from .fp16_evidence import evidence

                driving = np.ascontiguousarray(golden.arrays["driving"][:1].transpose(0, 3, 1, 2))
                row["fp16_evidence"] = evidence(engine, driving)
        except Exception as exc:
            return {**row, "status": "error", "reason": f"failed while running: {_first_line(exc)}"}
        finally:
            engine.close()
            gc.collect()
        eager = (
            None if variant == variant.eager else self.passed.get((golden.name, variant.eager.name))
        )
        fp32 = None
        if variant.precision == "fp16":
            fp32 = self.passed.get((golden.name, Variant(variant.backend, "fp32").name))
        verdict = contract.judge(outputs, golden, variant.precision, self.device, eager, fp32)
        evidence = row.get("fp16_evidence")
        if evidence is not None and not evidence["ran_fp16"]:
            # Right numbers from fp32 kernels are not an fp16 result.
            problem = f"fp16: no half-precision kernel ran ({evidence['what']})"
            verdict = {**verdict, "status": "fail", "problems": [problem, *verdict["problems"]]}
        if verdict["status"] == "pass":
            self.passed[(golden.name, variant.name)] = outputs
        reason = "; ".join(verdict["problems"][:3]) or None
        return {**row, **verdict, "reason": reason}

    def contract_step(self, golden: GoldenCase, variant: Variant) -> None:
        """Check ``variant`` on ``golden``; the row goes into ``contract``."""
        log(f"[contract] {golden.name} {variant.name} on {self.device}")
        row = self.check_variant(golden, variant)
        self.contract.append(row)
        if row["status"] == "pass":
            log(f"  pass: max abs error {row['max_abs']:.2e}, PSNR {row['psnr_db']:.1f} dB")
        else:
            log(f"  {row['status']}: {row['reason']}")
        if row["status"] in ("fail", "error"):
            self.problems.append(f"{golden.name} {variant.name}: {row['reason']}")

    # --- latency -----------------------------------------------------------------------------

    def _time_calls(
        self,
        prepare: Callable[[int], Any],
        call: Callable[[Any], np.ndarray],
        batch: int,
        check: Callable[[int, np.ndarray], None],
    ) -> list[float]:
        """Warm-up, then timed calls; ``prepare(index)`` builds a call's inputs outside the
        timed region, ``check(index, prediction)`` runs on the warm-up calls and the last."""
        from .timing import Clock

        clock = Clock(self.device)
        for index in range(WARMUP):
            check(index, call(prepare(index)))
        iterations = max(MIN_CALLS, self.args.iterations // batch)
        samples: list[float] = []
        prediction = None
        for index in range(WARMUP, WARMUP + iterations):
            inputs = prepare(index)
            begin = clock.now()
            prediction = call(inputs)
            end = clock.now()
            samples.append((end - begin) * 1000.0)
            if len(samples) >= MIN_CALLS and sum(samples) > self.cell_seconds * 1000.0:
                break
        if prediction is not None:
            check(WARMUP + len(samples) - 1, prediction)
        return samples

    def _cell(self, name: str, batch: int, samples: list[float], error: float | None) -> dict:
        from .timing import summarize

        stats = summarize(samples)
        return {
            "variant": name,
            "batch": batch,
            "status": "ok",
            "calls": len(samples),
            "p50_ms": stats["p50"],
            "p99_ms": stats["p99"],
            "fps": 1000.0 * batch / stats["p50"],
            "max_abs_vs_baseline": error,
            "speedup": None,
        }

    def _indices(self, call: int, batch: int) -> list[int]:
        return [(call * batch + b) % self._frames.shape[0] for b in range(batch)]

    def prepare_reference(self, golden: GoldenCase) -> None:
        """The reference of every latency cell: the baseline's prediction of each driving
        frame of ``golden`` (eager torch fp32, no TF32)."""
        from export.checkpoint import load_model

        from .baseline import DemoBaseline

        a = golden.arrays
        self.latency_golden = golden
        self._frames = np.ascontiguousarray(a["driving"].transpose(0, 3, 1, 2))  # F x C x H x W
        self._source = np.ascontiguousarray(a["source"].transpose(2, 0, 1)[None])
        self._model = load_model(golden.checkpoint, golden.config, self.device)
        with strict_fp32(self.device):
            demo = DemoBaseline(self._model, self._source, self._frames[:1], 1, self.device)
            for index in range(self._frames.shape[0]):
                frame = self._frames[index : index + 1]
                prediction = demo.step(demo.prepare(frame)).prediction
                self.reference[index] = prediction[0].astype(np.float64)

    def baseline_cell(self, batch: int) -> None:
        """The original demo loop's latency at ``batch``; the cell goes into ``latency``."""
        import torch

        from .baseline import DemoBaseline

        if self.latency_golden is None:
            self.latency.append(_no_reference("baseline", batch, self.no_reference))
            return
        log(f"[latency] baseline (eager torch fp32, unsplit) batch {batch}")
        worst = [0.0]
        driving = self._frames

        def check(call: int, prediction: np.ndarray) -> None:
            worst[0] = max(
                worst[0], _max_error(prediction, self._indices(call, batch), self.reference)
            )

        try:
            with strict_fp32(self.device):
                demo = DemoBaseline(self._model, self._source, driving[:1], batch, self.device)
                samples = self._time_calls(
                    lambda call: demo.prepare(driving[self._indices(call, batch)]),
                    lambda inputs: demo.step(inputs).prediction,
                    batch,
                    check,
                )
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            cell = {"variant": "baseline", "batch": batch, "status": "out_of_memory"}
            self.latency.append({**cell, "reason": _first_line(exc)})
            return
        self.latency.append(self._judged("baseline", "fp32", batch, samples, worst[0]))

    def variant_cell(self, variant: Variant, batch: int) -> None:
        """``variant``'s latency at ``batch`` (when its contract passed on the latency golden);
        the cell goes into ``latency``."""
        import torch

        golden = self.latency_golden
        if golden is None:
            self.latency.append(_no_reference(variant.name, batch, self.no_reference))
            return
        row = {"variant": variant.name, "batch": batch}
        if (golden.name, variant.name) not in self.passed:
            status = next(
                (
                    c["status"]
                    for c in self.contract
                    if c["golden"] == golden.name and c["variant"] == variant.name
                ),
                "not checked",
            )
            self.latency.append(
                {**row, "status": "skipped", "reason": f"contract on {golden.name}: {status}"}
            )
            return
        log(f"[latency] {variant.name} batch {batch}")
        try:
            cell = self._engine_cell(golden, variant, batch)
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            cell = {**row, "status": "out_of_memory", "reason": _first_line(exc)}
        except UserError as exc:
            cell = {**row, "status": "skipped", "reason": _first_line(exc)}
        except Exception as exc:
            cell = {**row, "status": "error", "reason": _first_line(exc)}
            self.problems.append(f"latency {variant.name} batch {batch}: {cell['reason']}")
        self.latency.append(cell)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def speedups(self) -> None:
        """Each cell's speedup over the baseline cell of its batch."""
        base = {
            c["batch"]: c
            for c in self.latency
            if c["variant"] == "baseline" and c["status"] == "ok"
        }
        for cell in self.latency:
            if cell["status"] == "ok" and cell["batch"] in base:
                cell["speedup"] = base[cell["batch"]]["p50_ms"] / cell["p50_ms"]

    def _engine_cell(self, golden: GoldenCase, variant: Variant, batch: int) -> dict[str, Any]:
        from export.motion import relative_motion

        driving, reference, indices = self._frames, self.reference, self._indices

        source = golden.arrays["source"].transpose(2, 0, 1)[None]
        worst = [0.0]
        engine = start_engine(golden, variant, self.device, batch, self.cache_dir)
        try:
            avatar = engine.set_avatar(np.ascontiguousarray(np.repeat(source, batch, axis=0)))
            first = engine.animate(np.ascontiguousarray(np.repeat(driving[:1], batch, axis=0)))
            engine.set_motion(
                relative_motion(
                    avatar.value, avatar.jacobian, first.driving.value, first.driving.jacobian, True
                )
            )

            def inputs(index: int) -> np.ndarray:
                return np.ascontiguousarray(driving[indices(index, batch)])

            def call(frames: np.ndarray) -> np.ndarray:
                return engine.animate(frames).prediction

            def check(index: int, prediction: np.ndarray) -> None:
                worst[0] = max(worst[0], _max_error(prediction, indices(index, batch), reference))

            samples = self._time_calls(inputs, call, batch, check)
        finally:
            engine.close()
            gc.collect()
        return self._judged(variant.name, variant.precision, batch, samples, worst[0])

    def _judged(
        self, name: str, precision: str, batch: int, samples: list[float], error: float
    ) -> dict[str, Any]:
        """A latency cell, failed when its predictions are not the baseline's."""
        bound = contract.tolerance(precision, self.device)["max_abs"]
        # Both differ from the golden by at most the bound, so from each other by twice it.
        bound = 2 * bound if precision == "fp32" else bound
        cell = self._cell(name, batch, samples, error)
        if not error <= bound:
            cell["status"] = "fail"
            cell["reason"] = f"max abs error {error:.3g} against the baseline > {bound:.3g}"
            self.problems.append(f"latency {name} batch {batch}: {cell['reason']}")
        return cell


@contextlib.contextmanager
def strict_fp32(device: str) -> Iterator[None]:
    """No TF32 in PyTorch's convolutions, RNNs and matmuls while the fp32 baseline runs (CUDA),
    on every torch the project allows (:func:`engines.torch_engine.tf32_off`), restored after."""
    if not device.startswith("cuda"):
        yield
        return
    from engines.torch_engine import tf32_off

    with tf32_off():
        yield
