"""Build TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API).

- fp32: the float32 ONNX graph; TF32 is switched off (``BuilderFlag.TF32`` is on by default
  and costs about 1e-2 on the goldens, far past the fp32 bounds of the contract tests). The
  same holds for the float32 layers of fp16 engines, as in every backend.
- fp16: the mixed-precision ONNX graph (:func:`export.onnx_export.mixed_precision_model`: fp16
  convolution stacks, float32 keypoint and motion math, explicit casts) parsed into a
  *strongly typed* network, so TensorRT runs every tensor in the type the graph gives it. The
  alternative, the float32 graph with ``BuilderFlag.FP16``, lets TensorRT pick fp16 for the
  keypoint softmax and sums too, which costs 1e-2 on keypoints (measured with ONNX Runtime on
  the goldens); TensorRT forbids ``BuilderFlag.FP16`` on strongly typed networks.

A timing cache file is loaded before and saved after every build (atomically), so rebuilds for
another resolution or precision on the same GPU reuse measured tactics. Progress is printed
while building: TensorRT's :class:`IProgressMonitor` phases where available, else a periodic
"still building" line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError, UserError
from .files import atomic_write_bytes

DEFAULT_WORKSPACE = 4 << 30  # bytes of scratch memory tactics may use while building


class TensorRTBuildError(UserError):
    """TensorRT could not parse the ONNX file or build an engine."""


def import_tensorrt() -> Any:
    """Import tensorrt, or raise an error that says how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(
            "the tensorrt backend needs the Python package 'tensorrt' (TensorRT 10), which is "
            "not installed.\nInstall it with:  pip install 'avatarcam[gpu]'   (or: pip install "
            "-e '.[gpu]' in a checkout).\nTensorRT runs on NVIDIA GPUs only and needs a recent "
            "NVIDIA driver; the pip wheels bring the TensorRT libraries but download them from "
            "pypi.nvidia.com at install time. Without an NVIDIA GPU use --backend onnxruntime."
        ) from exc
    return tensorrt


@dataclass(frozen=True)
class BuildSettings:
    """How an engine is built (every field is part of the engine cache key)."""

    precision: str = "fp32"  # fp32, or fp16 from the mixed-precision ONNX (strongly typed)
    workspace: int = DEFAULT_WORKSPACE  # bytes of the workspace memory pool
    optimization_level: int = 3  # builder optimization level, 0 (fast build) to 5
    format: int = 2  # bump when the build recipe changes (2: detailed layer information)


_deadline: float | None = None  # time.monotonic() after which builds are cancelled


def set_build_deadline(deadline: float | None) -> None:
    """Cancel TensorRT builds still running at ``deadline`` (a ``time.monotonic()`` value; None:
    never), through the progress monitor (TensorRT >= 10): gpu_check's time budget."""
    global _deadline
    _deadline = deadline


class BuildCancelled(TensorRTBuildError):
    """A build cancelled at the deadline: not a failure of the build (not remembered)."""

    transient = True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def make_progress_monitor(trt: Any, report: Callable[[str], None]) -> Any | None:
    """A TensorRT IProgressMonitor that reports top-level phases and coarse step progress;
    None when this TensorRT has no IProgressMonitor (before 10.0)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # required by the pybind11 trampoline
            self._lock = threading.Lock()  # TensorRT may call from several threads
            self._steps: dict[str, int] = {}
            self._parents: dict[str, str | None] = {}
            self._last: dict[str, int] = {}

        def _depth(self, phase: str) -> int:
            depth, parent = 0, self._parents.get(phase)
            while parent is not None:
                depth, parent = depth + 1, self._parents.get(parent)
            return depth

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = num_steps
                self._parents[phase_name] = parent_phase
                self._last[phase_name] = -1
                if self._depth(phase_name) <= 1:
                    indent = "  " * self._depth(phase_name)
                    report(f"tensorrt: {indent}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 0)
                if total >= 10 and self._depth(phase_name) <= 1:
                    decile = (step + 1) * 10 // total
                    if decile > self._last.get(phase_name, -1) and decile % 2 == 0:
                        self._last[phase_name] = decile
                        indent = "  " * self._depth(phase_name)
                        report(f"tensorrt: {indent}{phase_name}: {decile * 10}%")
            return _deadline is None or time.monotonic() < _deadline  # False cancels

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._steps.pop(phase_name, None)
                self._last.pop(phase_name, None)

    return Monitor()


class _Heartbeat:
    """Prints "still building" every ``period`` seconds while a build without a progress
    monitor runs."""

    def __init__(self, what: str, report: Callable[[str], None], period: float = 15.0):
        self._what = what
        self._report = report
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self._period):
            self._report(
                f"tensorrt: still building {self._what} ({time.monotonic() - start:.0f} s)"
            )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    settings: BuildSettings,
    timing_cache: str | Path | None = None,
    report: Callable[[str], None] = _stderr,
) -> Path:
    """Parse ``onnx_path``, build a serialized engine with ``settings`` and write it
    atomically to ``engine_path``. ``timing_cache`` is read before and rewritten after."""
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0  # networks are always explicit-batch in TensorRT 10
    if settings.precision == "fp16":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path.name}:\n  {errors}\n"
            "Re-export the model (delete the engine cache folder) or report this with the "
            "message above."
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace)
    config.builder_optimization_level = settings.optimization_level
    # TF32 is on by default; keep float32 layers (all of fp32, keypoints in fp16) exact.
    config.clear_flag(trt.BuilderFlag.TF32)
    # Layer precisions for the engine inspector (evidence that fp16 layers run in half).
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None:
        config.profiling_verbosity = verbosity.DETAILED
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        report("tensorrt: the timing cache does not fit this GPU/TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = make_progress_monitor(trt, report)
    if monitor is not None:
        config.progress_monitor = monitor
    report(f"tensorrt: building {engine_path.name} ({settings.precision}); this takes minutes")
    start = time.monotonic()
    if monitor is None:
        with _Heartbeat(engine_path.name, report):
            serialized = builder.build_serialized_network(network, config)
    else:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None and _deadline is not None and time.monotonic() >= _deadline:
        raise BuildCancelled(
            f"the TensorRT build of {engine_path.name} was cancelled at the time limit after "
            f"{time.monotonic() - start:.0f} s"
        )
    if serialized is None:
        raise TensorRTBuildError(
            f"TensorRT {trt.__version__} failed to build an engine from {onnx_path.name} (see "
            "the TensorRT messages above). Common causes: not enough GPU memory for the "
            "workspace, or an unsupported GPU."
        )
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    if timing_cache is not None:
        atomic_write_bytes(
            Path(timing_cache), bytes(memoryview(config.get_timing_cache().serialize()))
        )
    report(f"tensorrt: built {engine_path.name} in {time.monotonic() - start:.0f} s")
    return engine_path
