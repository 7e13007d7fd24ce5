"""The ONNX Runtime backend: the exported graphs in ONNX Runtime sessions.

Providers: the CUDA EP (on ``cuda`` devices, both precisions), then the CPU EP; sessions are
opened and verified by :func:`engines.onnxruntime_session.open_session`. Sessions are tuned
for latency: all graph optimizations, sequential execution, one intra-op thread per physical
core; the optimized model is cached.

Every graph tensor has one buffer (an ``OrtValue``) allocated once, and both sessions are bound
to them with I/O binding: the avatar graph writes the avatar state into the device buffers the
frame graph reads, the motion transfer is uploaded into its buffers once per reference frame,
and per frame only the driving frame goes up and the frame and keypoints come back, through
fixed host buffers (page-locked on a GPU): one host copy in, one DMA each way, one host copy
per output. :meth:`OnnxRuntimeEngine.run` uses buffers of its own and leaves the session state
alone. Providers are chosen, proven and checked in :mod:`engines.onnxruntime_providers`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import missing_dependency
from export.iospec import DRIVING, GraphSpec, ModelIO
from export.threads import inference_threads

from .base import Engine
from .device import Device, cuda_available, pinned_zeros
from .errors import EngineError, EngineWarning
from .onnxruntime_providers import (
    CPU_EP,
    CUDA_EP,
    GPU_EPS,
    TENSORRT_EP,
    Providers,
    cpu_nodes_note,
    half_nodes,
    placement,
    preload_libraries,
    probe_cuda,
    profiled_options,
    provider_list,
    temporary_profile_dir,
    tf32_disabled,
    verify_session,
)

__all__ = [
    "CPU_EP",
    "CUDA_EP",
    "GPU_EPS",
    "TENSORRT_EP",
    "OnnxRuntimeEngine",
    "create_onnxruntime_engine",
    "provider_list",
]

log = logging.getLogger(__name__)


def _cuda_visible() -> bool:
    return cuda_available()


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


def session_options(
    ort: Any, optimized_path: Path | None = None, profile_dir: Path | None = None
) -> Any:
    """Latency-tuned session options; ``optimized_path`` saves the optimized model;
    ``profile_dir`` profiles the first run (to see which provider runs each node)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = inference_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fallbacks are reported by this module
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    if profile_dir is not None:
        profiled_options(options, profile_dir)
    return options


def create_session(ort: Any, model: Path, providers: Providers, options: Any) -> Any:
    """An InferenceSession for ``model`` with exactly ``providers`` (the wrapper's retry with
    other providers and default options is off: ``enable_fallback=0``); TensorRT EP engines
    are built without TF32 (see :func:`engines.onnxruntime_providers.tf32_disabled`). Use
    :func:`engines.onnxruntime_session.open_session`, which also verifies the session."""
    names = [name for name, _ in providers]
    no_tf32 = tf32_disabled() if TENSORRT_EP in names else contextlib.nullcontext()
    try:
        with no_tf32:
            return ort.InferenceSession(
                str(model),
                sess_options=options,
                providers=names,
                provider_options=[opts for _, opts in providers],
                enable_fallback=0,
            )
    except Exception as exc:
        raise EngineError(
            f"ONNX Runtime could not load {model.name} with providers {names}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


class OnnxRuntimeEngine(Engine):
    """Runs the avatar and frame graphs in two ONNX Runtime sessions with I/O binding.

    ``requested`` (the providers asked for) is compared with what each session runs
    (:func:`~engines.onnxruntime_providers.verify_session`); ``profiled`` sessions (GPU) are run
    once at start and their node placement reported.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        sessions: Mapping[str, Any],
        io: ModelIO,
        precision: str,
        device: str | Device,
        requested: Providers | None = None,
        profiled: bool = False,
    ):
        dev = Device.parse(str(device))
        super().__init__(io, precision, str(dev))
        self._ort = import_onnxruntime()
        self._sessions = dict(sessions)  # by graph name
        self.fp16_evidence: dict[str, Any] | None = None  # fp16 on a GPU: from the profile
        self.providers = list(self._sessions[io.frame.name].get_providers())  # active EPs
        for graph in (io.avatar, io.frame):
            session = self._sessions[graph.name]
            what = f"the {graph.name} graph"
            if requested is not None:
                self.notes.extend(verify_session(session, requested, dev, what))
            elif dev.is_cuda:
                verify_session(session, [], dev, what)
            self._check_session(graph)
        self._location = "cuda" if dev.is_cuda else "cpu"
        self._device_id = dev.ordinal
        # Host buffers (page-locked on a GPU): the frame graph's outputs are bound to them, so
        # ONNX Runtime copies each into its buffer at the end of a run; the driving frame is
        # staged in one and uploaded into its device buffer (IOBinding copies an input from
        # another device once, when it is bound, so inputs stay on the device).
        self._pinned: list[Any] = []  # torch tensors that own page-locked host memory
        self._host: dict[str, np.ndarray] = {}  # host arrays the bound OrtValues wrap
        self._staging: dict[str, np.ndarray] = {}  # host staging of device inputs
        self._values: dict[str, Any] = {}
        OrtValue = self._ort.OrtValue
        frame_outputs = set(io.frame.output_names)
        for spec in (*io.avatar.inputs, *io.avatar.outputs, *io.frame.inputs, *io.frame.outputs):
            if spec.name in self._values:
                continue
            if self._location == "cpu" or spec.name in frame_outputs:
                array = self._host_array(spec.shape)
                self._host[spec.name] = array
                self._values[spec.name] = OrtValue.ortvalue_from_numpy(array)
            else:
                self._values[spec.name] = OrtValue.ortvalue_from_shape_and_type(
                    spec.shape, np.float32, "cuda", self._device_id
                )
                if spec.name == DRIVING:
                    self._staging[DRIVING] = self._host_array(spec.shape)
        self._bindings: dict[str, Any] = {}
        for graph in (io.avatar, io.frame):
            binding = self._sessions[graph.name].io_binding()
            for name in graph.input_names:
                binding.bind_ortvalue_input(name, self._values[name])
            for name in graph.output_names:
                binding.bind_ortvalue_output(name, self._values[name])
            self._bindings[graph.name] = binding
        if profiled:
            self._report_placement()

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}, {self.device}, {', '.join(self.providers)})"

    def _host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed float32 host array: page-locked when this engine runs on a GPU."""
        if self._location == "cuda":
            pinned = pinned_zeros(shape)
            if pinned is not None:
                self._pinned.append(pinned[1])
                return pinned[0]
            note = (
                "host buffers are pageable (PyTorch has no CUDA here, so none can be pinned): "
                "slower uploads and downloads"
            )
            if note not in self.notes:
                self.notes.append(note)
                warnings.warn(note, EngineWarning, stacklevel=3)
        return np.zeros(shape, np.float32)

    def _report_placement(self) -> None:
        """Run both graphs once (warm-up) with profiling on and report nodes on the CPU."""
        for graph in (self.io.avatar, self.io.frame):
            session = self._sessions[graph.name]
            session.run_with_iobinding(self._bindings[graph.name])
            profile = Path(session.end_profiling())
            try:
                note = cpu_nodes_note(placement(profile), f"the {graph.name} graph")
                if self.precision == "fp16" and graph.name == self.io.frame.name:
                    total, half = half_nodes(profile)
                    names = [n for nodes in half.values() for n in nodes]
                    self.fp16_evidence = {
                        "what": "profiled nodes of the frame graph with float16 outputs",
                        "total": total,
                        "half": len(names),
                        "by_provider": {p: len(nodes) for p, nodes in half.items()},
                        "examples": names[:3],
                        "ran_fp16": bool(half.get(CUDA_EP)),
                    }
            finally:
                profile.unlink(missing_ok=True)
            if note is not None:
                self.notes.append(note)
                warnings.warn(note, EngineWarning, stacklevel=3)

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

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        value = self._values[name]
        if name in self._host:
            np.copyto(self._host[name], array)  # CPU: the bound buffer itself
        elif name in self._staging:
            staging = self._staging[name]
            np.copyto(staging, array)  # the one host copy, into page-locked memory
            value.update_inplace(staging)  # one DMA up
        else:
            value.update_inplace(array)  # avatar and motion: once per change
        return value

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        if name in self._host:
            return self._host[name].copy()  # the fixed buffer is overwritten next call
        return handle.numpy()  # a device tensor: one download into a new array

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        for name in graph.input_names:
            # The session API feeds the fixed buffers; anything else is copied into them.
            if feeds[name] is not self._values[name]:
                self._values[name].update_inplace(feeds[name].numpy())
        self._sessions[graph.name].run_with_iobinding(self._bindings[graph.name])
        return {name: self._values[name] for name in graph.output_names}

    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        OrtValue = self._ort.OrtValue
        session = self._sessions[graph.name]
        binding = session.io_binding()
        for name in graph.input_names:
            if self._location == "cpu":
                value = OrtValue.ortvalue_from_numpy(feeds[name])
            else:
                value = OrtValue.ortvalue_from_numpy(feeds[name], "cuda", self._device_id)
            binding.bind_ortvalue_input(name, value)
        for name in graph.output_names:
            binding.bind_output(name, "cpu")  # straight to fresh host arrays
        session.run_with_iobinding(binding)
        return dict(zip(graph.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _release(self) -> None:
        self._bindings.clear()
        self._sessions.clear()
        self._values.clear()
        self._host.clear()
        self._staging.clear()
        self._pinned.clear()


def create_onnxruntime_engine(
    checkpoint: str | Path,
    config: Any,
    io: ModelIO,
    precision: str,
    device: str,
    cache: Any,
) -> OnnxRuntimeEngine:
    """Check that the device's providers load, export (or reuse) the ONNX files, then load (or
    build and cache) the optimized models for them, and start the engine."""
    from export.onnx_export import model_slug

    from .cache import CacheEntry
    from .failures import FILE as FAILURES
    from .failures import FailureMemory
    from .identity import cpu_name, package_version
    from .onnx_recipe import onnx_artifacts
    from .onnxruntime_session import open_session

    ort = import_onnxruntime()
    dev = Device.parse(device)
    gpu = dev.is_cuda
    gpu_name = ""
    if gpu:
        preload_libraries(ort)
        probe_cuda(ort, dev)  # before exporting: a CPU-only wheel fails here, in a second
        if cuda_available():
            import torch

            major, minor = torch.cuda.get_device_capability(dev.ordinal)
            gpu_name = f"{torch.cuda.get_device_name(dev.ordinal)} sm_{major}{minor}"
    onnx_paths, onnx_entry = onnx_artifacts(
        cache, checkpoint, config, io.resolution, io.batch, precision
    )
    providers = provider_list(ort, dev, precision)
    memory = FailureMemory(
        Path(cache.root) / FAILURES,
        {
            "cpu": cpu_name(),
            "gpu": gpu_name,
            "onnxruntime": ort.__version__,
            "onnxruntime_distributions": installed_distributions(),
            "tensorrt": package_version("tensorrt-cu12") or package_version("tensorrt"),
        },
    )
    if getattr(cache, "retry_failed", False):
        memory.forget()  # --remeasure: provider sets that failed here are tried again
    sessions: dict[str, Any] = {}
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        profile_dir = Path(stack.enter_context(temporary_profile_dir())) if gpu else None

        def open_graph(graph: str, path: Path, optimized: Path | None) -> Any:
            opened = open_session(
                ort,
                path,
                [providers],
                lambda: session_options(ort, optimized, profile_dir),
                str(dev),
                f"the {graph} graph",
                memory,
            )
            notes.extend(opened.notes)
            return opened.session

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
            # Verified sessions only: no model optimized for another provider under this key.
            for graph, path in onnx_paths.items():
                sessions[graph] = open_graph(graph, path, folder / files[graph])

        def load(entry: CacheEntry) -> None:
            for graph in onnx_paths:
                if graph not in sessions:
                    sessions[graph] = open_graph(graph, entry.file(files[graph]), None)

        label = (
            f"{model_slug(config)}-{io.resolution}px-b{io.batch}-{precision}-"
            f"{'gpu' if gpu else 'cpu'}"
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
        engine = OnnxRuntimeEngine(sessions, io, precision, dev, providers, profiled=gpu)
        engine.notes.extend(note for note in notes if note not in engine.notes)
        return engine
