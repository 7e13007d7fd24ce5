"""The TensorRT backend: serialized engines (built by :mod:`export.tensorrt_build`, cached by
:mod:`engines.cache`) run with ``IExecutionContext.execute_async_v3`` on one CUDA stream.

Device memory is PyTorch CUDA tensors, allocated once: one buffer per tensor name of the I/O
spec, so the avatar engine writes the avatar state straight into the buffers the frame engine
reads (no copies), and every tensor address is set on the execution contexts once. Per frame:
the driving frame is copied into a pinned host buffer and uploaded asynchronously, the frame
engine is enqueued (or its captured CUDA graph replayed, with ``cuda_graph``), and the frame
and keypoints are copied back into pinned host buffers; then one stream synchronization.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from export.iospec import DRIVING, GraphSpec, ModelIO

from .base import Engine
from .errors import EngineError

log = logging.getLogger(__name__)


class EngineLoadError(EngineError):
    """A serialized engine could not be deserialized or does not match the I/O spec."""


def import_tensorrt() -> Any:
    from export.tensorrt_build import import_tensorrt as _import

    return _import()


def require_cuda(device: str) -> Any:
    """torch with a usable CUDA device, or an EngineError saying what is missing."""
    import torch

    if not torch.cuda.is_available():
        raise EngineError(
            "the tensorrt backend needs an NVIDIA GPU with a working driver and a CUDA build of "
            f"PyTorch; PyTorch {torch.__version__} sees no CUDA device. Use --backend "
            "onnxruntime (CPU) or install the NVIDIA driver and a CUDA build of PyTorch."
        )
    if not device.startswith("cuda"):
        raise EngineError(f"the tensorrt backend runs on CUDA devices only, not '{device}'")
    return torch


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
    ):
        torch = require_cuda(device)
        trt = import_tensorrt()
        super().__init__(io, precision, device)
        self.cuda_graph = cuda_graph  # capture the frame enqueue in a CUDA graph
        self._torch = torch
        self._trt = trt
        self._dev = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engines: dict[str, Any] = {}
        self._contexts: dict[str, Any] = {}
        self._graph: Any = None  # the captured CUDA graph of the frame enqueue
        with torch.cuda.device(self._dev):
            self._stream = torch.cuda.Stream(device=self._dev)
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
            # One device buffer per tensor name, shared by both engines.
            self._buffers: dict[str, Any] = {}
            for spec in (
                *io.avatar.inputs,
                *io.avatar.outputs,
                *io.frame.inputs,
                *io.frame.outputs,
            ):
                if spec.name not in self._buffers:
                    self._buffers[spec.name] = torch.zeros(
                        spec.shape, dtype=torch.float32, device=self._dev
                    )
            # Pinned host buffers: the driving frame going up, the frame outputs coming back.
            self._driving_host = torch.empty(
                io.frame.tensor(DRIVING).shape, dtype=torch.float32, pin_memory=True
            )
            self._host_out = {
                t.name: torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
                for t in io.frame.outputs
            }
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

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        torch = self._torch
        source = torch.from_numpy(array)
        with torch.cuda.stream(self._stream):
            if self._scratch:
                return source.to(self._dev, non_blocking=False)
            if name == DRIVING:
                self._driving_host.copy_(source)  # host memcpy into pinned memory
                self._buffers[name].copy_(self._driving_host, non_blocking=True)
            else:
                self._buffers[name].copy_(source)
        return self._buffers[name]

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        if handle.device.type == "cpu":
            return handle.numpy().copy()  # pinned buffers are reused next frame
        self._stream.synchronize()
        return handle.cpu().numpy()

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        context = self._contexts[graph.name]
        stream = self._stream
        with torch.cuda.device(self._dev), torch.cuda.stream(stream):
            if self._scratch:
                buffers = dict(feeds)
                for spec in graph.outputs:
                    buffers[spec.name] = torch.empty(
                        spec.shape, dtype=torch.float32, device=self._dev
                    )
                self._bind(graph, buffers)
                try:
                    if not context.execute_async_v3(stream.cuda_stream):
                        raise EngineError(f"TensorRT failed to run the {graph.name} engine")
                    stream.synchronize()
                finally:
                    self._bind(graph, self._buffers)
                return {name: buffers[name] for name in graph.output_names}
            for name in graph.input_names:
                if feeds[name] is not self._buffers[name]:
                    self._buffers[name].copy_(feeds[name], non_blocking=True)
            if graph.name == self.io.frame.name and self.cuda_graph:
                self._replay(context)
            elif not context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run the {graph.name} engine")
            if graph.name != self.io.frame.name:
                stream.synchronize()
                return {name: self._buffers[name] for name in graph.output_names}
            for name in graph.output_names:
                self._host_out[name].copy_(self._buffers[name], non_blocking=True)
            stream.synchronize()
        return {name: self._host_out[name] for name in graph.output_names}

    def _replay(self, context: Any) -> None:
        """Replay the captured enqueue; capture it on first use (after one plain run, which
        TensorRT needs before capture). Falls back to plain enqueues if capture fails."""
        torch = self._torch
        stream = self._stream
        if self._graph is None:
            if not context.execute_async_v3(stream.cuda_stream):
                raise EngineError("TensorRT failed to run the frame engine")
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=stream):
                    context.execute_async_v3(stream.cuda_stream)
            except Exception as exc:
                log.warning(
                    "CUDA graph capture of the TensorRT frame engine failed (%s); "
                    "running without it",
                    exc,
                )
                self.cuda_graph = False
                return
            self._graph = graph
        self._graph.replay()

    def _release(self) -> None:
        self._graph = None
        self._contexts.clear()
        self._engines.clear()
        self._buffers = {}
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

    from .cache import onnx_artifacts

    torch = require_cuda(device)
    trt = import_tensorrt()
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    gpu = torch.cuda.get_device_name(index)
    capability = "sm_{}{}".format(*torch.cuda.get_device_capability(index))
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
        with torch.cuda.device(index), cache.locked_file(timing, "the TensorRT timing cache") as tc:
            for graph, path in onnx_paths.items():
                build_engine(path, folder / files[graph], settings, tc)

    label = f"{model_slug(config)}-{io.resolution}px-b{io.batch}-{precision}"
    what = "TensorRT engine"
    entry = cache.get_or_build("tensorrt", label, key, list(files.values()), build, what)
    paths = {graph: entry.file(name) for graph, name in files.items()}
    try:
        return TensorRTEngine(paths, io, precision, device, cuda_graph)
    except EngineLoadError as exc:
        cache.discard(entry, str(exc), what)
        entry = cache.get_or_build("tensorrt", label, key, list(files.values()), build, what)
        paths = {graph: entry.file(name) for graph, name in files.items()}
        return TensorRTEngine(paths, io, precision, device, cuda_graph)
