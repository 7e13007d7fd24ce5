"""The TensorRT backend: serialized engines (built by :mod:`export.tensorrt_build`, cached by
:mod:`engines.cache`) run with ``IExecutionContext.execute_async_v3`` on one CUDA stream.

Device memory is allocated once, on the engine's stream (so the zero-fill is ordered before
every use): one buffer per tensor name of the I/O spec, so the avatar engine writes the avatar
state straight into the buffers the frame engine reads (no copies), and every tensor address is
set on the execution contexts once. Host data goes through page-locked staging buffers: per
frame the driving frame is copied into its pinned buffer and uploaded asynchronously, the frame
engine is enqueued (or its captured CUDA graph replayed, with ``cuda_graph``), and the frame and
keypoints are copied back into pinned buffers; then one stream synchronization and one host
copy per output. A refused enqueue during CUDA-graph capture (which would replay an empty graph)
falls back to plain enqueues, with a warning. CUDA is reached through
:class:`engines.cuda_runtime.TorchCuda`.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from export.iospec import AVATAR_JACOBIAN, AVATAR_KP, DRIVING, GraphSpec, ModelIO

from .base import Engine
from .cuda_runtime import cuda_runtime
from .device import Device
from .errors import EngineError, EngineWarning

log = logging.getLogger(__name__)


class EngineLoadError(EngineError):
    """A serialized engine could not be deserialized or does not match the I/O spec."""


def import_tensorrt() -> Any:
    from export.tensorrt_build import import_tensorrt as _import

    return _import()


_HALF = re.compile(r"FP16|Half", re.IGNORECASE)


def layer_precisions(trt: Any, engine: Any) -> dict[str, Any] | None:
    """How many of the engine's layers write half-precision outputs, from the engine
    inspector (layer details need an engine built with ProfilingVerbosity.DETAILED, see
    :mod:`export.tensorrt_build`); None when this TensorRT has no inspector."""
    create = getattr(engine, "create_engine_inspector", None)
    fmt = getattr(trt, "LayerInformationFormat", None)
    if create is None or fmt is None:
        return None
    try:
        info = json.loads(create().get_engine_information(fmt.JSON))
    except (ValueError, RuntimeError) as exc:
        log.info("the TensorRT engine inspector gave no layer information: %s", exc)
        return None
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    half = [
        str(layer.get("Name", "?"))
        for layer in layers
        if any(
            _HALF.search(str(out.get("Format/Datatype", ""))) for out in layer.get("Outputs", [])
        )
    ]
    return {
        "what": "engine inspector: frame engine layers with half-precision outputs",
        "total": len(layers),
        "half": len(half),
        "examples": half[:3],
        "ran_fp16": bool(half),
    }


def require_cuda(device: str) -> Any:
    """The CUDA runtime for ``device``, or an EngineError saying what is missing."""
    return cuda_runtime(Device.parse(device))


class TensorRTEngine(Engine):
    """Runs the avatar and frame engines with fixed device buffers."""

    backend = "tensorrt"

    def __init__(
        self,
        engine_paths: Mapping[str, Path],
        io: ModelIO,
        precision: str,
        device: str = "cuda",
        cuda_graph: bool = False,
        cuda: Any = None,
    ):
        dev = Device.parse(device)
        cuda = cuda if cuda is not None else cuda_runtime(dev)
        trt = import_tensorrt()
        super().__init__(io, precision, str(dev))
        self.cuda_graph = cuda_graph  # capture the frame enqueue in a CUDA graph
        self._cuda = cuda
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.fp16_evidence: dict[str, Any] | None = None  # fp16: the inspector's layer types
        self._engines: dict[str, Any] = {}
        self._contexts: dict[str, Any] = {}
        self._graph: Any = None  # the captured CUDA graph of the frame enqueue
        self._stream: Any = None
        self._buffers: dict[str, Any] = {}
        self._host_in: dict[str, Any] = {}
        self._host_out: dict[str, Any] = {}
        with cuda.on_device():
            self._stream = cuda.new_stream()
            for graph in (io.avatar, io.frame):
                engine = self._runtime.deserialize_cuda_engine(
                    Path(engine_paths[graph.name]).read_bytes()
                )
                if engine is None:
                    raise EngineLoadError(
                        f"TensorRT {trt.__version__} could not deserialize "
                        f"{Path(engine_paths[graph.name]).name} (built by another TensorRT "
                        "version or for another GPU, or damaged)"
                    )
                self._check_engine(engine, graph)
                context = engine.create_execution_context()
                if context is None:
                    raise EngineError(
                        f"TensorRT could not create an execution context for the {graph.name} "
                        "engine (out of GPU memory?)"
                    )
                self._engines[graph.name] = engine
                self._contexts[graph.name] = context
                if precision == "fp16" and graph.name == io.frame.name:
                    self.fp16_evidence = layer_precisions(trt, engine)
            specs = (*io.avatar.inputs, *io.avatar.outputs, *io.frame.inputs, *io.frame.outputs)
            with cuda.on_stream(self._stream):
                # One device buffer per tensor name, shared by both engines, zero-filled on
                # the stream that uses them.
                for spec in specs:
                    if spec.name not in self._buffers:
                        self._buffers[spec.name] = cuda.zeros(spec.shape)
            # Page-locked staging: every input going up, every output coming back to the host.
            for spec in (*io.avatar.inputs, *io.frame.inputs):
                self._host_in.setdefault(spec.name, cuda.pinned(spec.shape))
            for spec in io.frame.outputs:
                self._host_out[spec.name] = cuda.pinned(spec.shape)
            for name in (AVATAR_KP, AVATAR_JACOBIAN):
                if name in io.avatar.output_names:
                    self._host_out[name] = cuda.pinned(io.avatar.tensor(name).shape)
            self._stream.synchronize()
        for graph in (io.avatar, io.frame):
            self._bind(graph, self._buffers)

    def _check_engine(self, engine: Any, graph: GraphSpec) -> None:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        problems = []
        if sorted(inputs) != sorted(graph.input_names):
            problems.append(f"inputs {inputs}, expected {graph.input_names}")
        if sorted(outputs) != sorted(graph.output_names):
            problems.append(f"outputs {outputs}, expected {graph.output_names}")
        for spec in (*graph.inputs, *graph.outputs):
            if spec.name not in names:
                continue
            shape = tuple(engine.get_tensor_shape(spec.name))
            if shape != spec.shape:
                problems.append(f"'{spec.name}' has shape {shape}, expected {spec.shape}")
            if engine.get_tensor_dtype(spec.name) != trt.DataType.FLOAT:
                problems.append(
                    f"'{spec.name}' is {engine.get_tensor_dtype(spec.name)}, not float32"
                )
        if problems:
            raise EngineLoadError(
                f"the {graph.name} TensorRT engine does not match the I/O spec: "
                + "; ".join(problems)
            )

    def _bind(self, graph: GraphSpec, buffers: Mapping[str, Any]) -> None:
        context = self._contexts[graph.name]
        for name in (*graph.input_names, *graph.output_names):
            if not context.set_tensor_address(name, buffers[name].data_ptr()):
                raise EngineError(f"TensorRT refused the address of tensor '{name}'")

    def _enqueue(self, graph: str) -> None:
        if not self._contexts[graph].execute_async_v3(self._stream.cuda_stream):
            raise EngineError(
                f"TensorRT failed to run the {graph} engine (see the TensorRT messages above)"
            )

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        staging = self._host_in[name]
        staging.numpy()[...] = array  # the one host copy, into page-locked memory
        with self._cuda.on_device(), self._cuda.on_stream(self._stream):
            self._buffers[name].copy_(staging, non_blocking=True)
        if name != DRIVING:
            # Avatar and motion uploads are rare: finish them before the staging buffer can
            # be written again (the driving frame's is reused only after a synchronized frame).
            self._stream.synchronize()
        return self._buffers[name]

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        if name in self._host_out:
            return self._host_out[name].numpy().copy()  # staged; reused by the next call
        with self._cuda.on_device():
            self._stream.synchronize()
            return handle.cpu().numpy()

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        cuda = self._cuda
        with cuda.on_device(), cuda.on_stream(self._stream):
            for name in graph.input_names:
                if feeds[name] is not self._buffers[name]:
                    self._buffers[name].copy_(feeds[name], non_blocking=True)
            if graph.name == self.io.frame.name and self.cuda_graph:
                self._replay()
            else:
                self._enqueue(graph.name)
            for name in graph.output_names:
                if name in self._host_out:
                    self._host_out[name].copy_(self._buffers[name], non_blocking=True)
            self._stream.synchronize()
        return {name: self._buffers[name] for name in graph.output_names}

    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        cuda = self._cuda
        torch = getattr(cuda, "torch", None)
        with cuda.on_device(), cuda.on_stream(self._stream):
            buffers = {}
            for spec in (*graph.inputs, *graph.outputs):
                buffers[spec.name] = cuda.zeros(spec.shape)
            for name in graph.input_names:
                source = torch.from_numpy(feeds[name]) if torch is not None else feeds[name]
                buffers[name].copy_(source)
            self._bind(graph, buffers)
            try:
                self._enqueue(graph.name)
                self._stream.synchronize()
            finally:
                self._bind(graph, self._buffers)
            return {name: buffers[name].cpu().numpy() for name in graph.output_names}

    def _replay(self) -> None:
        """Replay the captured frame enqueue; capture it on first use (after one plain run,
        which TensorRT needs before capture). A capture that raises, or an enqueue TensorRT
        refuses while capturing (the graph would be empty and every frame would repeat the
        last output), falls back to plain enqueues with a warning."""
        if self._graph is None:
            self._enqueue(self.io.frame.name)  # this frame's result; TensorRT's warm-up
            self._stream.synchronize()
            graph = self._cuda.new_graph()
            context = self._contexts[self.io.frame.name]
            problem = None
            try:
                with self._cuda.capture(graph, self._stream):
                    if not context.execute_async_v3(self._stream.cuda_stream):
                        problem = "TensorRT refused the enqueue while capturing"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                message = (
                    f"CUDA graph capture of the TensorRT frame engine failed ({problem}); "
                    "running with plain enqueues"
                )
                warnings.warn(message, EngineWarning, stacklevel=4)
                self.notes.append(message)
                self.cuda_graph = False
                return
            self._graph = graph
            log.info("captured the TensorRT frame enqueue in a CUDA graph")
            return
        self._graph.replay()

    def _release(self) -> None:
        if self._stream is not None:
            # Enqueued work may still read or write the buffers: finish it before freeing.
            with self._cuda.on_device():
                self._stream.synchronize()
        self._graph = None
        self._contexts.clear()
        self._engines.clear()
        self._buffers = {}
        self._host_in = {}
        self._host_out = {}


def create_tensorrt_engine(
    checkpoint: str | Path,
    config: Any,
    io: ModelIO,
    precision: str,
    device: str,
    cache: Any,
    cuda_graph: bool = False,
) -> TensorRTEngine:
    """Export (or reuse) the ONNX files, build (or reuse) the engines for this GPU and
    TensorRT version, and start the engine. An engine that does not deserialize is rebuilt."""
    from export.onnx_export import model_slug
    from export.tensorrt_build import BuildSettings, build_engine

    from .onnx_recipe import onnx_artifacts

    cuda = require_cuda(device)
    trt = import_tensorrt()
    gpu = cuda.name()
    capability = cuda.capability()
    onnx_paths, onnx_entry = onnx_artifacts(
        cache, checkpoint, config, io.resolution, io.batch, precision
    )
    settings = BuildSettings(precision=precision)
    key = {
        "onnx": onnx_entry.digest,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "capability": capability,
        "settings": asdict(settings),
    }
    files = {graph: f"{graph}.engine" for graph in onnx_paths}
    slug = "".join(c if c.isalnum() else "-" for c in gpu)
    timing = f"tensorrt/timing-{trt.__version__}-{slug}-{capability}.cache"

    def build(folder: Path) -> None:
        with cuda.on_device(), cache.locked_file(timing, "the TensorRT timing cache") as tc:
            for graph, path in onnx_paths.items():
                build_engine(path, folder / files[graph], settings, tc)

    label = f"{model_slug(config)}-{io.resolution}px-b{io.batch}-{precision}"
    what = "TensorRT engine"
    # A build that fails (minutes) is remembered and not retried at every start.
    entry = cache.get_or_build("tensorrt", label, key, list(files.values()), build, what, True)
    paths = {graph: entry.file(name) for graph, name in files.items()}
    try:
        return TensorRTEngine(paths, io, precision, device, cuda_graph, cuda)
    except EngineLoadError as exc:
        cache.discard(entry, str(exc), what)
        entry = cache.get_or_build("tensorrt", label, key, list(files.values()), build, what, True)
        paths = {graph: entry.file(name) for graph, name in files.items()}
        return TensorRTEngine(paths, io, precision, device, cuda_graph, cuda)
