"""Runs the benchmark: the baseline first, then every backend/precision/device at every batch.

Every row animates the same avatar with the same driving frames under relative motion against
driving frame 0, and every prediction is compared with the fp32 baseline's prediction of the same
frame, so a row can never look fast by computing something else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import CalibrationFrames, EngineOptions, create_engine
from export.checkpoint import load_model
from export.config import ModelConfig, load_config
from export.errors import UserError
from export.model import FOMM, build_model
from export.motion import relative_motion

from . import baseline as baseline_module
from . import stages as stages_module
from .cpushare import CallMeter
from .inputs import SAMPLE_SOURCE, BenchInputs, load_inputs, shared_dir
from .machine import LoadProbe, machine_info, versions
from .memory import HostPeak, device_peak_mb, reset_device_peak
from .report import one_line
from .settings import SCHEMA, BenchConfig
from .timing import Clock, Step, run_calls, summarize
from .watermark import WatermarkStage

Log = Callable[[str], None]

BASELINE = "baseline"

DEFINITIONS = {
    "latency_ms": "wall-clock time of one call (one batch of frames) in milliseconds; on CUDA "
    "each timestamp follows torch.cuda.synchronize",
    "frame": "the whole per-frame call: Engine.animate (host frame in, host prediction out); "
    "for the baseline one demo iteration",
    "fps": "frames per second at the median latency: 1000 * batch / p50",
    "fps_mean": "frames per second over all timed calls: batch * calls / total time",
    "speedup": "baseline p50 / this row's p50, at the same batch size",
    "error": "absolute difference of the prediction from the fp32 baseline's prediction of the "
    "same driving frame, over every pixel of every call (warm-up included)",
    "host_peak_rss_mb": "peak resident memory of the benchmark process while the row's calls "
    "ran (the engine already built)",
    "device_peak_mb": "torch.cuda.max_memory_allocated over the row's calls (torch rows only)",
    "watermark": "embedding the invisible watermark (engines.watermark) into each frame of "
    "the call, after the frame is on the host as uint8, on the calling thread",
    "contention": "load_1m_start/end: the machine's 1-minute load average around the row's "
    "calls; process_cpu_per_wall: CPU seconds this process got per second; row_own_cores / "
    "row_others_cores: CPU seconds per second this process / all other processes got while the "
    "row ran (/proc/stat and getrusage); row_share: our part of the busy CPU time; "
    "sample_flags: per timed call, True when other processes used more than "
    "contended_cores_threshold cores during it; p50_uncontended_ms: the median of the calls "
    "that were not contended; repeated: the timed calls were run twice because most of the "
    "first pass was contended (the pass with fewer contended calls is kept)",
}


def calibration_frames(inputs: BenchInputs) -> CalibrationFrames:
    """int8 calibration on the benchmark's own avatar and driving frames (8-bit, H x W x C)."""

    def image(frame: np.ndarray) -> np.ndarray:  # C x H x W float in [0, 1]
        return np.clip(np.rint(frame.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    return CalibrationFrames(
        (image(inputs.source[0]),),
        tuple(image(f) for f in inputs.driving),
        f"benchmark inputs ({inputs.description.get('kind')})",
    )


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def frame_indices(call: int, batch: int, frames: int) -> list[int]:
    """The driving frames of call number ``call``: consecutive, cycling through ``frames``."""
    return [(call * batch + b) % frames for b in range(batch)]


@dataclass
class ErrorMeter:
    """Max and mean absolute error of predictions against per-frame reference predictions."""

    reference: dict[int, np.ndarray]  # driving frame index -> C x H x W fp32 baseline output
    max_abs: float = 0.0  # largest absolute difference seen
    total: float = 0.0  # sum of absolute differences
    elements: int = 0  # number of differences summed
    frames: int = 0  # predicted frames compared

    def add(self, indices: list[int], prediction: np.ndarray) -> None:
        for b, index in enumerate(indices):
            diff = np.abs(prediction[b].astype(np.float64) - self.reference[index])
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.total += float(diff.sum())
            self.elements += diff.size
            self.frames += 1

    def result(self) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.total / self.elements if self.elements else None,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class Weights:
    """The checkpoint every row loads, and where engines keep what they build from it."""

    checkpoint: Path  # the .pth.tar file
    cache_dir: Path | None  # engine artifact cache; None: the engines' default
    description: dict[str, Any]  # for the results file


def pipeline_variants(
    backends: Sequence[str], precisions: Sequence[str], device: str
) -> list[tuple[str, str]]:
    """(backend, precision) rows of the live-pipeline benchmark: each backend at the first
    precision asked for, and on a CPU the openvino backend also at int8 and at the command's
    default (auto: int8 where it passes its check), what a webcam user gets."""
    variants = [(backend, precisions[0]) for backend in backends]
    if device in ("cpu", "auto") and "openvino" in backends:
        for precision in ("int8", "auto"):
            if ("openvino", precision) not in variants:
                variants.append(("openvino", precision))
    return variants


@contextlib.contextmanager
def model_weights(
    cfg: BenchConfig, config: ModelConfig, inputs: BenchInputs | None = None
) -> Iterator[Weights]:
    """--checkpoint, or random weights saved to a temporary file.

    Random weights are made to behave like a trained network where int8 speed is concerned
    (:func:`benchmarks.weights.trained_like_checkpoint`): He-normal convolutions, FOMM's
    identity jacobian head and batch-norm scales measured on the run's own faces (``inputs``:
    the avatar and up to 8 driving frames), so activations are normalized as training leaves
    them. PyTorch's default initialisation with default statistics (what ``inputs=None``
    gives, e.g. the server benchmark) shrinks activations layer by layer instead, and int8
    timing depends on that
    (README, "Why weights change int8 speed").

    Engines built from random weights are useless after the run, so unless --cache-dir is
    given their artifacts (ONNX files, TensorRT plans) go to the temporary folder too instead
    of filling the user's engine cache.
    """
    if cfg.checkpoint is not None:
        description = {"kind": "checkpoint", "path": str(cfg.checkpoint)}
        yield Weights(cfg.checkpoint, cfg.cache_dir, description)
        return
    torch.manual_seed(cfg.seed)
    if inputs is not None:
        from .weights import trained_like_checkpoint

        faces = np.concatenate([inputs.source[:1], inputs.driving[:8]]).astype(np.float32)
        state = trained_like_checkpoint(config, torch.from_numpy(faces), cfg.seed)
        note = (
            "random He-normal weights (FOMM's identity jacobian head), batch-norm scales "
            "measured on the run's avatar "
            "and first 8 driving frames: activations are normalized as in a trained network, "
            "which int8 speed depends on (fp32 speed depends on the shapes only)"
        )
    else:
        model = build_model(config)
        state = {
            "generator": model.generator.state_dict(),
            "kp_detector": model.kp_detector.state_dict(),
        }
        del model
        note = (
            "random weights with the config's shapes (PyTorch's initialisation): fp32 speed "
            "depends on shapes only; int8 speed also on activation ranges"
        )
    with tempfile.TemporaryDirectory(prefix="avatarcam-bench-") as folder:
        path = Path(folder) / "random-weights.pth.tar"
        torch.save(state, path)
        del state
        yield Weights(
            path,
            cfg.cache_dir or Path(folder) / "engine-cache",
            {
                "kind": "random",
                "seed": cfg.seed,
                "init": "trained-like" if inputs is not None else "pytorch-default",
                "note": note + "; random weights give nearly constant predictions, so errors "
                "are a weaker check than with a real checkpoint",
            },
        )


@contextlib.contextmanager
def strict_fp32(device: str) -> Iterator[None]:
    """Turn TF32 off on CUDA while the fp32 reference runs (no-op on the CPU)."""
    if not device.startswith("cuda"):
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _stats(samples: dict[str, list[float]], name: str) -> dict[str, float] | None:
    return summarize(samples[name]) if samples.get(name) else None


def make_row(
    *,
    label: str,
    backend: str,
    precision: str,
    device: str,
    batch: int,
    engine: str,
    cfg: BenchConfig,
    frame_samples: list[float],
    stage_samples: dict[str, list[float]],
    stages_note: str,
    setup_s: float | None,
    error: dict[str, Any],
    memory: dict[str, Any],
    contention: dict[str, float | None],
) -> dict[str, Any]:
    """One results row (see DEFINITIONS for the meaning of each number)."""
    frame = summarize(frame_samples)
    return {
        "id": f"{label}/{precision}/{device}/b{batch}",
        "label": label,
        "baseline": label == BASELINE,
        "backend": backend,
        "precision": precision,
        "device": device,
        "batch": batch,
        "engine": engine,
        "warmup": cfg.warmup,
        "iterations": len(frame_samples),
        "setup_s": setup_s,
        "latency_ms": {
            "frame": frame,
            "keypoints": _stats(stage_samples, "keypoints"),
            "generator": _stats(stage_samples, "generator"),
            "watermark": _stats(stage_samples, "watermark"),
        },
        "stages_note": stages_note,
        "samples_ms": {"frame": frame_samples, **stage_samples},
        "fps": 1000.0 * batch / frame["p50"],
        "fps_mean": 1000.0 * batch * len(frame_samples) / sum(frame_samples),
        "speedup": None,
        "error": error,
        "memory": memory,
        "contention": contention,
    }


class Benchmark:
    """One run of :class:`BenchConfig`; :meth:`run` returns the results document."""

    def __init__(self, cfg: BenchConfig, log: Log = log_stderr):
        self.cfg = cfg
        self.log = log
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.failed = False  # a variant raised something other than a user-facing error
        self.reference: dict[int, np.ndarray] = {}  # driving frame -> baseline prediction
        self.frames = 0  # distinct driving frames the calls cycle through
        self.cache_dir: Path | None = cfg.cache_dir  # engine artifact cache of this run
        self.host = HostPeak()

    # --- helpers ---------------------------------------------------------------------------

    def _skip(
        self, label: str, precision: str, device: str, batch: int, status: str, why: str
    ) -> None:
        self.skipped.append(
            {
                "id": f"{label}/{precision}/{device}/b{batch}",
                "label": label,
                "backend": "torch" if label == BASELINE else label,
                "precision": precision,
                "device": device,
                "batch": batch,
                "status": status,
                "reason": why,
            }
        )
        self.log(f"  {status}: {one_line(why)}")

    def _memory(self, device: str, torch_device_memory: bool) -> dict[str, Any]:
        return {
            "host_peak_rss_mb": self.host.peak_mb(),
            "host_method": self.host.method,
            "device_peak_mb": device_peak_mb(device) if torch_device_memory else None,
        }

    def _schedule(self, batch: int) -> Callable[[int], list[int]]:
        frames = self.frames

        def indices(call: int) -> list[int]:
            return frame_indices(call, batch, frames)

        return indices

    def _timed(
        self,
        device: str,
        prepare: Callable[[int], Any],
        step: Callable[[Any], Step],
        check: Callable[[int, np.ndarray], None],
    ) -> tuple[dict[str, list[float]], dict[str, Any]]:
        """The measurement protocol every row shares: fresh memory peaks and load probe,
        then warm-up and timed calls, each with the CPU share it got (:mod:`.cpushare`). When
        most timed calls ran while other processes used the cores, the timed calls are
        repeated once and the pass with fewer contended calls is kept. Returns (samples by
        stage, contention)."""
        self.host.reset()
        reset_device_peak(device)
        iterations = self.cfg.iterations
        best: tuple[dict[str, list[float]], dict[str, Any]] | None = None
        for attempt in range(2):
            probe = LoadProbe()
            meter = CallMeter()
            warmup = self.cfg.warmup if attempt == 0 else 0
            samples = run_calls(warmup, iterations, prepare, meter.wrap(step), check)
            contention = {**probe.result(), **meter.summary(iterations), "repeated": attempt > 0}
            if best is None or contention["samples_contended"] < best[1]["samples_contended"]:
                best = (samples, contention)
            if contention["samples_contended"] * 2 <= iterations:
                break
            if attempt == 0:
                self.log(
                    f"  {contention['samples_contended']}/{iterations} calls ran while other "
                    "processes used the CPU; repeating the timed calls once"
                )
        samples, contention = best
        clean = [
            ms
            for ms, hit in zip(samples["frame"], contention["sample_flags"], strict=True)
            if not hit
        ]
        contention["p50_uncontended_ms"] = float(np.median(clean)) if clean else None
        return samples, contention

    # --- baseline --------------------------------------------------------------------------

    def _baseline_row(
        self, model: FOMM, inputs: BenchInputs, batch: int, device: str
    ) -> dict[str, Any]:
        cfg = self.cfg
        start = time.perf_counter()
        runner = baseline_module.DemoBaseline(
            model, inputs.source, inputs.driving[:1], batch, device
        )
        setup_s = time.perf_counter() - start
        indices = self._schedule(batch)
        # The first baseline row (the smallest batch) is the reference of every other row.
        collecting = not self.reference
        meter = ErrorMeter(self.reference)

        def check(call: int, prediction: np.ndarray) -> None:
            if collecting:
                for b, index in enumerate(indices(call)):
                    self.reference.setdefault(index, prediction[b].astype(np.float64))
            else:
                meter.add(indices(call), prediction)

        samples, contention = self._timed(
            device,
            lambda call: runner.prepare(inputs.driving[indices(call)]),
            runner.step,
            check,
        )
        if collecting:
            error = {
                "max_abs": 0.0,
                "mean_abs": 0.0,
                "frames": len(self.reference),
                "note": "this row is the reference",
            }
        else:
            error = meter.result()
        frame = samples.pop("frame")
        return make_row(
            label=BASELINE,
            backend="torch",
            precision="fp32",
            device=device,
            batch=batch,
            engine="eager torch, unsplit generator (original FOMM demo loop)",
            cfg=cfg,
            frame_samples=frame,
            stage_samples=samples,
            stages_note=baseline_module.STAGES_NOTE,
            setup_s=setup_s,
            error=error,
            memory=self._memory(device, True),
            contention=contention,
        )

    def _baseline(self, checkpoint: Path, config: ModelConfig, inputs: BenchInputs) -> None:
        device = self.cfg.baseline_device
        model = load_model(checkpoint, config, device)
        with strict_fp32(device):
            for batch in self.cfg.batches:
                self.log(f"[baseline] eager torch fp32 {device} batch {batch}")
                try:
                    row = self._baseline_row(model, inputs, batch, device)
                except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
                    self._skip(BASELINE, "fp32", device, batch, "out_of_memory", str(exc))
                    break
                self.rows.append(row)
                self._report_row(row)
        del model
        gc.collect()

    # --- engines ---------------------------------------------------------------------------

    def _engine_row(
        self,
        checkpoint: Path,
        config: ModelConfig,
        inputs: BenchInputs,
        backend: str,
        precision: str,
        device: str,
        batch: int,
        with_stages: bool,
    ) -> dict[str, Any]:
        cfg = self.cfg
        options = EngineOptions(
            backend=backend,
            precision=precision,
            device=device,
            batch=batch,
            cuda_graph=cfg.cuda_graph,
            cache_dir=self.cache_dir,
        )
        start = time.perf_counter()
        engine = create_engine(checkpoint, config, options, calibration=calibration_frames(inputs))
        try:
            avatar = engine.set_avatar(np.repeat(inputs.source, batch, axis=0))
            reference = engine.animate(np.repeat(inputs.driving[:1], batch, axis=0)).driving
            engine.set_motion(
                relative_motion(avatar.value, avatar.jacobian, reference.value, reference.jacobian)
            )
            setup_s = time.perf_counter() - start
            clock = Clock(engine.device)
            indices = self._schedule(batch)
            meter = ErrorMeter(self.reference)
            marking = WatermarkStage(config.resolution, batch)

            def step(frames: np.ndarray) -> Step:
                begin = clock.now()
                result = engine.animate(frames)
                end = clock.now()
                marked_s = marking.run(result.prediction)
                return Step(result.prediction, {"frame": end - begin, "watermark": marked_s})

            samples, contention = self._timed(
                device,
                lambda call: np.ascontiguousarray(inputs.driving[indices(call)]),
                step,
                lambda call, prediction: meter.add(indices(call), prediction),
            )
            memory = self._memory(device, engine.backend == "torch")
            description = engine.describe()
            engine_backend = engine.backend
        finally:
            engine.close()
            gc.collect()
        stage_samples: dict[str, list[float]] = {"watermark": samples["watermark"]}
        note = stages_module.NO_SPLIT_NOTE
        if engine_backend == "torch":
            note = stages_module.STAGES_NOTE
            if with_stages:
                stages = stages_module.TorchStages(
                    checkpoint,
                    config,
                    precision,
                    device,
                    inputs.source,
                    inputs.driving[:1],
                    batch,
                )
                stage_samples |= run_calls(
                    cfg.warmup,
                    cfg.iterations,
                    lambda call: stages.prepare(inputs.driving[indices(call)]),
                    stages.step,
                )
                stages.close()
                del stages
                gc.collect()
            elif self.cfg.stages:
                note = "stages are timed at the smallest batch only"
            else:
                note = "stage timing was turned off (--no-stages)"
        if engine_backend != backend:
            description += f" [asked for {backend}]"
        return make_row(
            label=backend,
            backend=backend,
            precision=precision,
            device=device,
            batch=batch,
            engine=description,
            cfg=cfg,
            frame_samples=samples["frame"],
            stage_samples=stage_samples,
            stages_note=note,
            setup_s=setup_s,
            error=meter.result(),
            memory=memory,
            contention=contention,
        )

    def _variant(
        self, checkpoint: Path, config: ModelConfig, inputs: BenchInputs, variant: tuple[str, ...]
    ) -> None:
        backend, precision, device = variant
        for batch in self.cfg.batches:
            self.log(f"[{backend}] {precision} {device} batch {batch}")
            try:
                row = self._engine_row(
                    checkpoint,
                    config,
                    inputs,
                    backend,
                    precision,
                    device,
                    batch,
                    with_stages=self.cfg.stages and batch == self.cfg.batches[0],
                )
            except UserError as exc:
                # The engine says it cannot run here: record why, and do not try larger batches.
                self._skip(backend, precision, device, batch, "unavailable", str(exc))
                return
            except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
                self._skip(backend, precision, device, batch, "out_of_memory", str(exc))
                return
            except Exception as exc:
                self.failed = True
                self._skip(
                    backend, precision, device, batch, "failed", f"{type(exc).__name__}: {exc}"
                )
                return
            self.rows.append(row)
            self._report_row(row)

    def _report_row(self, row: dict[str, Any]) -> None:
        frame = row["latency_ms"]["frame"]
        error = row["error"]
        self.log(
            f"  p50 {frame['p50']:.1f} ms, {row['fps']:.2f} FPS, max abs error "
            f"{error['max_abs']:.2e}"
        )

    def _pipeline(self, checkpoint: Path, config: ModelConfig) -> list[dict[str, Any]]:
        from .pipeline import PipelineConfig, measure_pipeline

        cfg = self.cfg
        results = []
        for backend, precision in pipeline_variants(cfg.backends, cfg.precisions, cfg.devices[0]):
            self.log(f"pipeline: {backend} {precision} on {cfg.pipeline}")
            run = PipelineConfig(
                video=cfg.pipeline,
                avatar=cfg.source or shared_dir() / SAMPLE_SOURCE,
                checkpoint=checkpoint,
                config=cfg.config,
                resolution=config.resolution,
                backend=backend,
                precision=precision,
                device=cfg.devices[0],
                cache_dir=self.cache_dir,
            )
            try:
                results.append(measure_pipeline(run))
            except UserError as exc:
                self.log(f"  pipeline {backend} {precision}: not measured ({exc})")
                results.append(
                    {
                        "backend": backend,
                        "precision": precision,
                        "skipped": str(exc).splitlines()[0],
                    }
                )
        return results

    def _quality(
        self, checkpoint: Path, config: ModelConfig, inputs: BenchInputs
    ) -> list[dict[str, Any]] | None:
        from .quality import INT8_BACKENDS, quality_report

        cfg = self.cfg
        if not {"fp32", "int8"} <= set(cfg.precisions):
            return None
        reports = []
        for backend in (b for b in cfg.backends if b in INT8_BACKENDS):
            self.log(f"quality: {backend} int8 against fp32, frame by frame")
            try:
                reports.append(
                    quality_report(
                        checkpoint,
                        config,
                        inputs,
                        calibration_frames(inputs),
                        backend,
                        cfg.devices[0],
                        self.cache_dir,
                    )
                )
            except UserError as exc:
                reports.append({"backend": backend, "skipped": one_line(str(exc))})
        return reports

    def _offline(self, checkpoint: Path, config: ModelConfig) -> dict[str, Any]:
        from .offline import OfflineSetup, measure_offline

        cfg = self.cfg
        setup = OfflineSetup(
            video=cfg.offline,
            avatar=cfg.source or shared_dir() / SAMPLE_SOURCE,
            checkpoint=checkpoint,
            config=cfg.config,
            resolution=config.resolution,
            cache_dir=self.cache_dir,
            variants=cfg.offline_variants,
            rounds=cfg.offline_rounds,
        )
        try:
            return measure_offline(setup, self.log)
        except UserError as exc:
            self.log(f"  offline command: not measured ({one_line(str(exc))})")
            return {"skipped": one_line(str(exc))}

    # --- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = dt.datetime.now(dt.timezone.utc)
        machine = machine_info()
        config = load_config(cfg.config, cfg.resolution)
        inputs = load_inputs(
            cfg.source,
            cfg.driving,
            config.resolution,
            config.num_channels,
            cfg.max_frames,
            cfg.seed,
        )
        # Every frame a row uses must have a baseline prediction: the baseline at the smallest
        # batch sees (warmup + iterations) * batch frames, so never cycle through more.
        self.frames = min(inputs.driving.shape[0], (cfg.warmup + cfg.iterations) * cfg.batches[0])
        self.log(
            f"model {config.name} at {config.resolution}x{config.resolution}; inputs: "
            f"{inputs.description['kind']} ({self.frames} driving frames)"
        )
        with model_weights(cfg, config, inputs) as weights:
            checkpoint = weights.checkpoint
            self.cache_dir = weights.cache_dir
            self._baseline(checkpoint, config, inputs)
            if not self.reference:
                raise RuntimeError("the baseline produced no reference predictions")
            for backend in cfg.backends:
                for precision in cfg.precisions:
                    for device in cfg.devices:
                        self._variant(checkpoint, config, inputs, (backend, precision, device))
            pipeline = self._pipeline(checkpoint, config) if cfg.pipeline else None
            quality = self._quality(checkpoint, config, inputs)
            offline = self._offline(checkpoint, config) if cfg.offline else None
        for row in self.rows:
            base = next(
                (r for r in self.rows if r["baseline"] and r["batch"] == row["batch"]), None
            )
            if base is not None:
                row["speedup"] = (
                    base["latency_ms"]["frame"]["p50"] / row["latency_ms"]["frame"]["p50"]
                )
        finished = dt.datetime.now(dt.timezone.utc)
        if hasattr(os, "getloadavg"):
            machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        return {
            "schema": SCHEMA,
            "timestamp": started.isoformat(timespec="seconds"),
            "duration_s": round((finished - started).total_seconds(), 1),
            "command": cfg.command,
            "machine": machine,
            "versions": versions(),
            "settings": {
                "model": config.name,
                "config": cfg.config,
                "weights": weights.description,
                "cache_dir": str(cfg.cache_dir) if cfg.cache_dir else None,
                "resolution": config.resolution,
                "backends": list(cfg.backends),
                "precisions": list(cfg.precisions),
                "devices": list(cfg.devices),
                "batches": list(cfg.batches),
                "warmup": cfg.warmup,
                "iterations": cfg.iterations,
                "stages": cfg.stages,
                "cuda_graph": cfg.cuda_graph,
                "baseline_device": cfg.baseline_device,
                "inputs": {**inputs.description, "frames_cycled": self.frames},
                "motion": "relative, adapt-scale, reference = driving frame 0",
            },
            "baseline": {
                "description": "unsplit FOMM in eager PyTorch fp32, frame by frame, as the "
                "original demo runs it: kp_detector on the driving frame, normalize_kp, the full "
                "generator forward (source encoder included) every frame",
                "device": cfg.baseline_device,
                "tf32": False,
            },
            "definitions": DEFINITIONS,
            "rows": self.rows,
            "skipped": self.skipped,
            # The end-to-end live loop (decode, face crop, animate, null virtual camera), one
            # entry per backend; None without --pipeline.
            "pipeline": pipeline,
            # int8 against fp32 per frame (PSNR, keypoint error); None unless both were asked.
            "quality": quality,
            # The offline command (run_live.py) timed from outside; None without --offline.
            "offline": offline,
        }
