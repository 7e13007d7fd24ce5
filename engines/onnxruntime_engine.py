"""The ONNX Runtime backend: the exported graphs in ONNX Runtime sessions.

Providers, in order of preference and only those this onnxruntime has: TensorRT EP, CUDA EP
(on ``cuda`` devices), then the CPU EP. Sessions are tuned for latency: all graph
optimizations, sequential execution, one intra-op thread per physical core; the optimized model
is cached (except with the TensorRT EP, whose compiled nodes cannot be saved; it caches its
engines and timing cache itself, in the engine cache folder).

Every graph tensor has one buffer (an ``OrtValue``) allocated once, on the device, and both
sessions are bound to them with I/O binding: the avatar graph writes the avatar state into the
buffers the frame graph reads, the motion transfer is uploaded into its buffers once per
reference frame, and per frame only the driving frame goes up (into its fixed buffer) and the
frame and keypoints come back. :meth:`OnnxRuntimeEngine.run` uses separate, fresh buffers and
leaves the session state alone.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import missing_dependency
from export.iospec import GraphSpec, ModelIO
from export.threads import inference_threads

from .base import Engine
from .errors import EngineError

log = logging.getLogger(__name__)

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_EPS = (TENSORRT_EP, CUDA_EP)


def _cuda_visible() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def installed_distributions() -> list[str]:
    """Which of the onnxruntime distributions are installed (they share one module)."""
    from importlib import metadata

    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return found


def import_onnxruntime() -> Any:
    """Import onnxruntime or raise MissingDependencyError naming the extra to install; warn
    when both onnxruntime and onnxruntime-gpu are installed."""
    dists = installed_distributions()
    if len(dists) > 1:
        warnings.warn(
            "both 'onnxruntime' and 'onnxruntime-gpu' are installed; they provide the same "
            "'onnxruntime' module and overwrite each other's files, so which one you get is an "
            "accident of install order. Uninstall both and install one: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'avatarcam[gpu]' "
            "(NVIDIA GPU) or 'avatarcam[cpu]'.",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        import onnxruntime
    except ImportError as exc:
        gpu = _cuda_visible()
        raise missing_dependency(
            "onnxruntime-gpu" if gpu else "onnxruntime",
            "gpu" if gpu else "cpu",
            "the onnxruntime backend",
        ) from exc
    return onnxruntime


def _device_id(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def provider_list(
    ort: Any, device: str, precision: str, trt_cache: Path | None
) -> list[tuple[str, dict[str, str]]]:
    """Execution providers with options, in order of preference, for ``device``."""
    available = set(ort.get_available_providers())
    providers: list[tuple[str, dict[str, str]]] = []
    if device.startswith("cuda"):
        device_id = str(_device_id(device))
        if TENSORRT_EP in available and trt_cache is not None:
            providers.append(
                (
                    TENSORRT_EP,
                    {
                        "device_id": device_id,
                        "trt_fp16_enable": "1" if precision == "fp16" else "0",
                        "trt_engine_cache_enable": "1",
                        "trt_engine_cache_path": str(trt_cache),
                        "trt_timing_cache_enable": "1",
                        "trt_timing_cache_path": str(trt_cache),
                        "trt_max_workspace_size": str(4 << 30),
                    },
                )
            )
        if CUDA_EP in available:
            providers.append(
                (
                    CUDA_EP,
                    {
                        "device_id": device_id,
                        "cudnn_conv_algo_search": "EXHAUSTIVE",
                        "do_copy_in_default_stream": "1",
                        # TF32 convolutions cost ~1e-3 of accuracy: off for fp32 engines.
                        "use_tf32": "0" if precision == "fp32" else "1",
                    },
                )
            )
    providers.append((CPU_EP, {}))
    return providers


def session_options(ort: Any, optimized_path: Path | None = None) -> Any:
    """Latency-tuned session options; ``optimized_path`` saves the optimized model."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = inference_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fallbacks are reported by this module
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def create_session(
    ort: Any, model: Path, providers: list[tuple[str, dict[str, str]]], options: Any
) -> Any:
    names = [name for name, _ in providers]
    try:
        return ort.InferenceSession(
            str(model),
            sess_options=options,
            providers=names,
            provider_options=[opts for _, opts in providers],
        )
    except Exception as exc:
        raise EngineError(
            f"ONNX Runtime could not load {model.name} with providers {names}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


class OnnxRuntimeEngine(Engine):
    """Runs the avatar and frame graphs in two ONNX Runtime sessions with I/O binding."""

    backend = "onnxruntime"

    def __init__(self, sessions: Mapping[str, Any], io: ModelIO, precision: str, device: str):
        super().__init__(io, precision, device)
        self._ort = import_onnxruntime()
        self._sessions = dict(sessions)  # by graph name
        self.providers = list(self._sessions[io.frame.name].get_providers())  # active EPs
        on_gpu = device.startswith("cuda")
        if on_gpu and not any(p in GPU_EPS for p in self.providers):
            raise EngineError(
                f"ONNX Runtime could not start a GPU execution provider (active: "
                f"{self.providers}); install onnxruntime-gpu with matching CUDA/cuDNN libraries "
                "(pip install 'avatarcam[gpu]') or use --device cpu"
            )
        self._location = "cuda" if on_gpu else "cpu"
        self._device_id = _device_id(device) if on_gpu else 0
        for graph in (io.avatar, io.frame):
            self._check_session(graph)
        # One fixed buffer per tensor name (the avatar state is shared by both graphs).
        self._host: dict[str, np.ndarray] = {}  # CPU: numpy arrays the OrtValues wrap
        self._values: dict[str, Any] = {}
        for spec in (*io.avatar.inputs, *io.avatar.outputs, *io.frame.inputs, *io.frame.outputs):
            if spec.name not in self._values:
                self._values[spec.name] = self._allocate(spec.name, spec.shape)
        self._bindings: dict[str, Any] = {}
        for graph in (io.avatar, io.frame):
            binding = self._sessions[graph.name].io_binding()
            for name in graph.input_names:
                binding.bind_ortvalue_input(name, self._values[name])
            for name in graph.output_names:
                binding.bind_ortvalue_output(name, self._values[name])
            self._bindings[graph.name] = binding

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}, {self.device}, {', '.join(self.providers)})"

    def _check_session(self, graph: GraphSpec) -> None:
        session = self._sessions[graph.name]
        inputs = [(i.name, tuple(i.shape)) for i in session.get_inputs()]
        outputs = [(o.name, tuple(o.shape)) for o in session.get_outputs()]
        want_in = [(t.name, t.shape) for t in graph.inputs]
        want_out = [(t.name, t.shape) for t in graph.outputs]
        if inputs != want_in or outputs != want_out:
            raise EngineError(
                f"the {graph.name} ONNX model does not match the I/O spec: inputs {inputs}, "
                f"outputs {outputs}; expected {want_in} -> {want_out}"
            )

    def _allocate(self, name: str, shape: tuple[int, ...]) -> Any:
        OrtValue = self._ort.OrtValue
        if self._location == "cpu":
            array = np.zeros(shape, np.float32)
            self._host[name] = array
            return OrtValue.ortvalue_from_numpy(array)  # shares the array's memory
        return OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", self._device_id)

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        OrtValue = self._ort.OrtValue
        if self._scratch:
            if self._location == "cpu":
                return OrtValue.ortvalue_from_numpy(array)
            return OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
        value = self._values[name]
        if self._location == "cpu":
            np.copyto(self._host[name], array)
        else:
            value.update_inplace(array)
        return value

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        if self._location == "cpu" and not self._scratch and name in self._host:
            return self._host[name].copy()  # the fixed buffer is overwritten next call
        return np.array(handle.numpy(), copy=True)

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        session = self._sessions[graph.name]
        if self._scratch:
            binding = session.io_binding()
            for name in graph.input_names:
                binding.bind_ortvalue_input(name, feeds[name])
            for name in graph.output_names:
                binding.bind_output(name, self._location, self._device_id)
            session.run_with_iobinding(binding)
            return dict(zip(graph.output_names, binding.get_outputs(), strict=True))
        for name in graph.input_names:
            # The session API feeds the fixed buffers; anything else is copied into them.
            if feeds[name] is not self._values[name]:
                self._values[name].update_inplace(feeds[name])
        session.run_with_iobinding(self._bindings[graph.name])
        return {name: self._values[name] for name in graph.output_names}

    def _release(self) -> None:
        self._bindings.clear()
        self._sessions.clear()
        self._values.clear()
        self._host.clear()


def create_onnxruntime_engine(
    checkpoint: str | Path,
    config: Any,
    io: ModelIO,
    precision: str,
    device: str,
    cache: Any,
) -> OnnxRuntimeEngine:
    """Export (or reuse) the ONNX files, then load (or build and cache) the optimized models
    for this device's providers, and start the engine."""
    from export.onnx_export import model_slug

    from .cache import CacheEntry, cpu_name, key_digest, onnx_artifacts, package_version

    ort = import_onnxruntime()
    onnx_paths, onnx_entry = onnx_artifacts(
        cache, checkpoint, config, io.resolution, io.batch, precision
    )
    gpu = device.startswith("cuda")
    gpu_name = ""
    if gpu:
        import torch

        if torch.cuda.is_available():
            index = _device_id(device)
            major, minor = torch.cuda.get_device_capability(index)
            gpu_name = f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"
    trt_cache = None
    if gpu and TENSORRT_EP in ort.get_available_providers():
        trt_key = {"onnx": onnx_entry.digest, "onnxruntime": ort.__version__, "gpu": gpu_name}
        trt_cache = cache.root / "onnxruntime-tensorrt" / key_digest(trt_key)
        trt_cache.mkdir(parents=True, exist_ok=True)
    providers = provider_list(ort, device, precision, trt_cache)
    names = [name for name, _ in providers]
    sessions: dict[str, Any] = {}
    if TENSORRT_EP in names:
        # Compiled TensorRT nodes cannot be saved as an optimized model; the EP caches its
        # engines in trt_cache instead. The first start builds them (minutes).
        print(
            "avatarcam: ONNX Runtime's TensorRT provider is building engines (minutes on the "
            "first start; cached afterwards) ...",
            file=sys.stderr,
            flush=True,
        )
        for graph, path in onnx_paths.items():
            sessions[graph] = create_session(ort, path, providers, session_options(ort))
        return OnnxRuntimeEngine(sessions, io, precision, device)

    key = {
        "onnx": onnx_entry.digest,
        "onnxruntime": ort.__version__,
        "onnxruntime_distributions": installed_distributions(),
        "providers": providers,
        "cpu": cpu_name(),
        "gpu": gpu_name,
        "optimization": "ORT_ENABLE_ALL",
        "numpy": package_version("numpy"),
    }
    files = {graph: f"{graph}.optimized.onnx" for graph in onnx_paths}

    def build(folder: Path) -> None:
        for graph, path in onnx_paths.items():
            options = session_options(ort, folder / files[graph])
            session = create_session(ort, path, providers, options)
            active = session.get_providers()
            if gpu and not any(p in GPU_EPS for p in active):
                # Do not cache a model optimized for the CPU under the GPU's key.
                raise EngineError(
                    f"ONNX Runtime could not start a GPU execution provider (active: {active}); "
                    "install onnxruntime-gpu with matching CUDA/cuDNN libraries (pip install "
                    "'avatarcam[gpu]') or use --device cpu"
                )
            sessions[graph] = session

    def load(entry: CacheEntry) -> None:
        for graph in onnx_paths:
            if graph not in sessions:
                sessions[graph] = create_session(
                    ort, entry.file(files[graph]), providers, session_options(ort)
                )

    label = (
        f"{model_slug(config)}-{io.resolution}px-b{io.batch}-{precision}-{'gpu' if gpu else 'cpu'}"
    )
    what = "ONNX Runtime optimized model"
    entry = cache.get_or_build("onnxruntime", label, key, list(files.values()), build, what)
    try:
        load(entry)  # nothing to do when this call built the sessions
    except EngineError as exc:
        cache.discard(entry, str(exc), what)
        sessions.clear()
        entry = cache.get_or_build("onnxruntime", label, key, list(files.values()), build, what)
        load(entry)
    return OnnxRuntimeEngine(sessions, io, precision, device)
