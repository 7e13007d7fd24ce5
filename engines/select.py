"""Backend selection: ``--backend auto`` and the errors when nothing can start.

``auto`` tries, in order, the candidates that can run on the requested device:

1. ``tensorrt`` on a CUDA GPU (TensorRT engines: the fastest on NVIDIA GPUs),
2. ``onnxruntime`` on a CUDA GPU (TensorRT or CUDA execution provider),
3. ``torch`` on a CUDA GPU,
4. ``openvino`` and ``onnxruntime`` on the CPU, the faster first: without a CUDA GPU, ``auto``
   measures both once (:mod:`engines.race`, cached) and the reason quotes the numbers,
5. ``torch`` on the CPU.

``--device gpu[.N]`` / ``npu`` are OpenVINO devices (Intel graphics, NPUs): only ``openvino``
runs there. ``--precision auto`` (the command's default) is int8 on a CPU where it passes its
check, else fp32 (:mod:`engines.int8_auto`). ``--precision int8`` is OpenVINO's (NNCF-quantized
frame graph, :mod:`engines.int8`): ``auto`` picks ``openvino`` for it and says why the others
cannot.

A candidate whose prerequisites are missing is skipped with the reason; one that fails to
start is recorded with its error; the first that starts wins and its
``engine.selection_reason`` says which backend runs and why the ones before it do not. An
explicit ``--backend`` tries only that backend (on the GPU, then the CPU, for
``--device auto``). When no candidate starts, :class:`~engines.errors.EngineError` lists every
candidate with its reason and the pip extra or system step that fixes it. Errors about the
checkpoint or config are raised at once: no backend can fix those.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.config import ModelConfig
from export.errors import CheckpointError, ConfigError, MissingDependencyError
from export.iospec import model_io
from export.threads import inference_threads

from .base import Engine
from .cache import CacheDirError
from .calibration import CalibrationSource
from .device import Device, check_device
from .errors import EngineError
from .options import BACKENDS, PRECISIONS, EngineOptions

log = logging.getLogger(__name__)

GPU_ORDER = ("tensorrt", "onnxruntime", "torch")
CPU_ORDER = ("openvino", "onnxruntime", "torch")
#: Backends --backend auto measures against each other on a CPU without a CUDA GPU.
MEASURED_CPU = ("openvino", "onnxruntime")
OPENVINO_ORDER = ("openvino",)  # --device gpu[.N] / npu

_FIX_GPU_DRIVER = (
    "install an NVIDIA GPU driver and a CUDA build of PyTorch (https://pytorch.org/get-started)"
)
_FIX = {
    "tensorrt": "pip install 'avatarcam[gpu]' (needs an NVIDIA GPU and driver)",
    "onnxruntime-cpu": "pip install 'avatarcam[cpu]'",
    "onnxruntime-gpu": "pip install 'avatarcam[gpu]' (and uninstall the CPU-only onnxruntime)",
    "openvino": "pip install 'avatarcam[cpu]'",
    "int8": "use --backend openvino (or auto) for int8, or --precision fp32",
    "torch-cpu": "reinstall PyTorch: pip install torch",
    "torch-gpu": _FIX_GPU_DRIVER,
}

#: Fixes for an Intel device that OpenVINO (installed) cannot use: its driver.
_FIX_INTEL = {
    "gpu": "install Intel's GPU driver (compute runtime: intel-opencl-icd on Linux, the Intel "
    'Graphics driver on Windows), then check that python -c "import openvino; '
    'print(openvino.Core().available_devices)" lists GPU; or use --device cpu',
    "npu": "install Intel's NPU driver (intel-npu-driver on Linux, the Intel NPU driver on "
    "Windows); or use --device cpu",
}


@dataclass(frozen=True)
class Attempt:
    """One candidate that was skipped or failed."""

    backend: str  # tensorrt, onnxruntime, openvino or torch
    device: str  # cpu, cuda[:N], gpu[.N] or npu
    reason: str  # what went wrong, in one line
    fix: str  # the pip extra or system step that fixes it

    def line(self) -> str:
        return f"- {self.backend} on {self.device}: {self.reason}\n    fix: {self.fix}"


def _cuda_available() -> bool:
    from .device import cuda_available

    return cuda_available()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _devices(device: str) -> list[str]:
    """Devices to try for ``--device``: auto means the GPU (if any), then the CPU."""
    if device == "auto":
        return ["cuda", "cpu"] if _cuda_available() else ["cpu"]
    return [str(Device.parse(device))]


def candidates(options: EngineOptions) -> list[tuple[str, str]]:
    """(backend, device) pairs to try, in order of preference."""
    devices = _devices(options.device)
    pairs = []
    for device in devices:
        if device.startswith("cuda"):
            order = GPU_ORDER
        elif Device.parse(device).is_intel:
            order = OPENVINO_ORDER
        else:
            order = CPU_ORDER
        for backend in order:
            if options.backend in ("auto", backend):
                pairs.append((backend, device))
    if not pairs:  # e.g. --backend tensorrt --device cpu
        pairs.append((options.backend, devices[0]))
    return pairs


def precheck(backend: str, device: str, precision: str) -> Attempt | None:
    """Why ``backend`` cannot run on ``device`` at ``precision`` here, before trying it."""
    gpu = device.startswith("cuda")
    if precision == "int8" and backend != "openvino":
        return Attempt(
            backend, device, "int8 is the openvino backend's (NNCF-quantized)", _FIX["int8"]
        )
    if backend == "openvino":
        if gpu:
            return Attempt(
                backend,
                device,
                "OpenVINO does not drive NVIDIA GPUs (its GPU device is Intel graphics)",
                "use --device cpu, gpu (Intel) or npu with --backend openvino",
            )
        if not _installed("openvino"):
            return Attempt(backend, device, "openvino is not installed", _FIX["openvino"])
        if precision == "int8" and not _installed("nncf"):
            return Attempt(backend, device, "nncf is not installed (int8)", _FIX["openvino"])
        return None
    if gpu and _cuda_available():
        from .device import cuda_device_count

        count = cuda_device_count()
        if count and Device.parse(device).ordinal >= count:
            return Attempt(
                backend, device, f"no such GPU (PyTorch sees {count})", "use --device cuda:0"
            )
    if backend == "tensorrt":
        if not gpu:
            return Attempt(backend, device, "TensorRT runs on NVIDIA GPUs only", _FIX["tensorrt"])
        if not _installed("tensorrt"):
            return Attempt(
                backend, device, "the tensorrt package is not installed", _FIX["tensorrt"]
            )
        if not _cuda_available():
            return Attempt(backend, device, "PyTorch sees no CUDA GPU", _FIX_GPU_DRIVER)
    elif backend == "onnxruntime":
        if not _installed("onnxruntime"):
            extra = "onnxruntime-gpu" if gpu else "onnxruntime-cpu"
            return Attempt(backend, device, "onnxruntime is not installed", _FIX[extra])
    elif backend == "torch":
        if gpu and not _cuda_available():
            return Attempt(backend, device, "PyTorch sees no CUDA GPU", _FIX_GPU_DRIVER)
        if precision == "fp16" and not gpu:
            return Attempt(
                backend,
                device,
                "fp16 needs CUDA in the torch backend",
                "use --precision fp32, --backend onnxruntime, or a GPU",
            )
    return None


def _fix_for(backend: str, device: str, exc: BaseException) -> str:
    gpu = device.startswith("cuda")
    if backend == "tensorrt":
        return _FIX["tensorrt"]
    if backend == "onnxruntime":
        return _FIX["onnxruntime-gpu" if gpu else "onnxruntime-cpu"]
    if backend == "openvino":
        kind = device.split(".", 1)[0].lower()
        if kind in _FIX_INTEL and not isinstance(exc, MissingDependencyError):
            return _FIX_INTEL[kind]  # openvino is installed: the device's driver is missing
        return _FIX["openvino"]
    return _FIX["torch-gpu" if gpu else "torch-cpu"]


def _start(
    backend: str,
    device: str,
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None = None,
    require_verified: bool = False,
) -> Engine:
    from .cache import ArtifactCache

    io = model_io(config, config.resolution, options.batch)
    cache = ArtifactCache(options.cache_dir, retry_failed=options.remeasure)
    if backend == "torch":
        from .torch_engine import create_torch_engine

        return create_torch_engine(
            checkpoint,
            config,
            io,
            options.precision,
            device,
            options.cuda_graph,
            _torch_compile(options),
            cache,
            options.remeasure,
        )
    if backend == "onnxruntime":
        from .onnxruntime_engine import create_onnxruntime_engine

        if options.cuda_graph:
            log.info("cuda_graph is not used by the onnxruntime backend")
        return create_onnxruntime_engine(checkpoint, config, io, options.precision, device, cache)
    if backend == "openvino":
        from .openvino_engine import create_openvino_engine

        if options.cuda_graph:
            log.info("cuda_graph is not used by the openvino backend")
        return create_openvino_engine(
            checkpoint,
            config,
            io,
            options.precision,
            device,
            cache,
            calibration,
            options.recalibrate_int8,
            require_verified,
        )
    if backend == "tensorrt":
        from .tensorrt_engine import create_tensorrt_engine

        return create_tensorrt_engine(
            checkpoint, config, io, options.precision, device, cache, options.cuda_graph
        )
    raise EngineError(f"unknown backend '{backend}': expected one of {BACKENDS}")


def _torch_compile(options: EngineOptions) -> bool | None:
    """--compile compiles; --backend auto compiles only where measured faster (None)."""
    if options.compile:
        return True
    return None if options.backend == "auto" else False


def _why(backend: str, device: str) -> str:
    if backend == "tensorrt":
        return "TensorRT engines are the fastest on NVIDIA GPUs"
    if backend == "onnxruntime" and device.startswith("cuda"):
        return "ONNX Runtime's GPU providers are next fastest"
    if backend == "onnxruntime":
        return "ONNX Runtime is faster than eager PyTorch on the CPU"
    if backend == "openvino" and device != "cpu":
        return f"OpenVINO is the backend that drives {device}"
    if backend == "openvino":
        return "OpenVINO is faster than eager PyTorch on the CPU"
    return "eager PyTorch is the fallback that always works"


def validate_options(options: EngineOptions) -> None:
    if options.backend not in BACKENDS:
        raise EngineError(f"unknown backend '{options.backend}': expected one of {BACKENDS}")
    if options.precision not in PRECISIONS:
        raise EngineError(f"unknown precision '{options.precision}': expected one of {PRECISIONS}")
    if options.batch < 1:
        raise EngineError(f"batch must be at least 1, got {options.batch}")
    check_device(options.device)


def create(
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None = None,
) -> Engine:
    """Start the engine ``options`` ask for (see the module doc); ``calibration`` feeds an int8
    build (:mod:`engines.calibration`)."""
    validate_options(options)
    if options.backend == "remote":
        return _connect_remote(options)
    if options.precision == "auto":
        from .int8_auto import create_auto

        return create_auto(create, checkpoint, config, options, calibration)
    failed: list[Attempt] = []
    pairs = candidates(options)
    measured = _measured_cpu_order(pairs, checkpoint, config, options)
    if measured is not None:
        rank = {b: i for i, b in enumerate(measured.order)}
        pairs.sort(key=lambda p: (p[1] != "cpu", rank.get(p[0], len(rank))))
    for backend, device in pairs:
        skip = precheck(backend, device, options.precision)
        if skip is not None:
            failed.append(skip)
            continue
        try:
            engine = _start(backend, device, checkpoint, config, options, calibration)
        except (CheckpointError, ConfigError, CacheDirError):
            raise  # the input or the cache folder is wrong, not the backend
        except MissingDependencyError as exc:
            failed.append(
                Attempt(backend, device, _first_line(exc), _fix_for(backend, device, exc))
            )
            continue
        except Exception as exc:  # any backend failure: record it and try the next one
            log.debug("backend %s on %s failed", backend, device, exc_info=True)
            failed.append(
                Attempt(
                    backend,
                    device,
                    f"{type(exc).__name__}: {_first_line(exc)}",
                    _fix_for(backend, device, exc),
                )
            )
            continue
        engine.selection_reason = _reason(options, backend, device, failed, engine.notes)
        if measured is not None and backend in measured.ms:
            engine.selection_reason += f"; measured on this CPU: {measured.reason()}"
        log.info("engine: %s", engine.selection_reason)
        return engine
    requested = "any backend" if options.backend == "auto" else f"the {options.backend} backend"
    lines = "\n".join(attempt.line() for attempt in failed)
    raise EngineError(
        f"could not start {requested} ({options.precision}, device {options.device}):\n{lines}"
    )


def _connect_remote(options: EngineOptions) -> Engine:
    """The remote backend: a session on an avatar server (no local checkpoint is used)."""
    if options.server is None:
        raise EngineError(
            "the remote backend needs a server: pass --server ws://HOST:PORT (start one with "
            "python -m engines.serve)"
        )
    from .remote_engine import connect

    return connect(options.server)


def _measured_cpu_order(
    pairs: list[tuple[str, str]],
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
) -> Any:
    """For ``auto`` without a CUDA GPU: the cached (or now measured) ranking of the CPU
    backends in :data:`MEASURED_CPU` that can run; None when there is nothing to compare."""
    if options.backend != "auto" or not pairs or pairs[0][1] != "cpu":
        return None
    runnable = [
        b
        for b, d in pairs
        if d == "cpu" and b in MEASURED_CPU and precheck(b, d, options.precision) is None
    ]
    if len(runnable) < 2:
        return None
    from dataclasses import asdict

    from .cache import ArtifactCache, cpu_name, package_version
    from .race import cpu_ranking

    cache = ArtifactCache(options.cache_dir)
    io = model_io(config, config.resolution, options.batch)
    key = {
        "backends": runnable,
        "precision": options.precision,
        "config": asdict(config),
        "resolution": config.resolution,
        "batch": options.batch,
        "cpu": cpu_name(),
        "threads": inference_threads(),
        "versions": {b: package_version(b) for b in runnable},
    }

    def start(backend: str) -> Engine:
        return _start(backend, "cpu", checkpoint, config, options)

    label = f"cpu-{config.resolution}px-b{options.batch}-{options.precision}"
    try:
        ranking = cpu_ranking(cache, key, runnable, start, io, label, options.remeasure)
    except (CheckpointError, ConfigError):
        raise
    except Exception:  # the selection below reports each backend's own failure
        # Not said at info level: the selection below reports the same failure, once.
        log.debug("could not measure the CPU backends; using the default order", exc_info=True)
        return None
    log.debug("CPU backend ranking: %s", ranking.reason())
    return ranking


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(
    options: EngineOptions,
    backend: str,
    device: str,
    failed: list[Attempt],
    engine_notes: list[str] | None = None,
) -> str:
    how = "picked by --backend auto" if options.backend == "auto" else "requested"
    text = f"{backend} on {device} ({options.precision}), {how}"
    if options.backend == "auto" and options.precision == "int8":
        text += ": int8 runs in the openvino backend only (NNCF-quantized frame graph)"
    elif options.backend == "auto":
        text += f": {_why(backend, device)}"
    if engine_notes:
        text += "; " + "; ".join(engine_notes)
    if failed:
        text += "; not used: " + "; ".join(
            f"{a.backend} on {a.device} ({a.reason})" for a in failed
        )
    return text
