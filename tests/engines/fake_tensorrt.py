"""A test double of the TensorRT 10 Python runtime and of CUDA, that executes the real graphs.

- :class:`FakeCuda` stands in for :class:`engines.cuda_runtime.TorchCuda`: "device" and
  "pinned" buffers are CPU tensors registered by address, and CUDA-graph capture records the
  enqueues made while capturing; ``replay()`` runs them again with the addresses bound at
  capture time (as a real graph does).
- Stream work is deferred, as on a GPU: ``execute_async_v3``, graph replays and
  ``copy_(..., non_blocking=True)`` on a current stream are queued on that stream and run, in
  order, only when the stream is synchronized (a blocking ``copy_`` first finishes the current
  stream's queue, as a stream-ordered blocking copy does). Host reads (``numpy()``) never wait,
  so a missing synchronization gives stale or zero outputs here too.
- :func:`fake_tensorrt` is the ``tensorrt`` module: the builder "serializes" the parsed ONNX
  file with its build flags; the runtime deserializes it into an engine that runs the exported
  graph in ONNX Runtime (CPU) on the tensors at the addresses set on its execution context.

So TensorRTEngine's binding, execution, capture and replay, staging and release run in CI.
"""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

MAGIC = b"FAKE-TRT\n"


class FakeStream:
    def __init__(self, cuda: FakeCuda, handle: int):
        self.cuda = cuda
        self.cuda_stream = handle
        self.pending: list[Callable[[], None]] = []  # queued work, in stream order

    def enqueue(self, op: Callable[[], None]) -> None:
        self.pending.append(op)

    def run_pending(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    def synchronize(self) -> None:
        self.run_pending()
        self.cuda.events.append(("sync", self.cuda_stream))
        if self.cuda.on_sync is not None:
            self.cuda.on_sync()


class StreamTensor(torch.Tensor):
    """A fake device or pinned buffer: asynchronous copies on a current stream are queued on
    it (see the module docstring)."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # results are plain tensors
    fake: FakeCuda | None = None

    def copy_(self, src: torch.Tensor, non_blocking: bool = False) -> StreamTensor:
        stream = self.fake.current() if self.fake is not None else None
        if stream is None:
            torch.Tensor.copy_(self, src)
        elif non_blocking:
            stream.enqueue(lambda: torch.Tensor.copy_(self, src))
        else:
            stream.run_pending()
            torch.Tensor.copy_(self, src)
        return self

    def wait_stream(self, other: FakeStream) -> None:
        pass


class FakeGraph:
    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.ops: list[Callable[[], None]] = []

    def replay(self) -> None:
        self.cuda.events.append(("replay", len(self.ops)))
        stream = self.cuda.current()
        for op in self.ops:
            if stream is None:
                op()
            else:
                stream.enqueue(op)


class FakeCuda:
    """CUDA on the CPU, for one device."""

    def __init__(self) -> None:
        self.torch = torch
        self.memory: dict[int, torch.Tensor] = {}  # address -> "device" buffer
        self.pinned_addresses: set[int] = set()
        self.allocations: list[int | None] = []  # the current stream of each device allocation
        self.events: list[tuple] = []
        self.on_sync: Callable[[], None] | None = None
        self.capturing: tuple[FakeGraph, FakeStream] | None = None
        self._current: list[FakeStream] = []
        self._streams = 0
        self.streams: dict[int, FakeStream] = {}
        self.devices_entered = 0

    def name(self) -> str:
        return "Fake GPU"

    def capability(self) -> str:
        return "sm_90"

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        self.devices_entered += 1
        yield

    def new_stream(self) -> FakeStream:
        self._streams += 1
        stream = FakeStream(self, 1000 + self._streams)
        self.streams[stream.cuda_stream] = stream
        return stream

    def current(self) -> FakeStream | None:
        """The stream work goes to (None: the legacy default stream, run at once here)."""
        return self._current[-1] if self._current else None

    def _buffer(self, shape: tuple[int, ...]) -> StreamTensor:
        tensor = torch.zeros(shape, dtype=torch.float32).as_subclass(StreamTensor)
        tensor.fake = self
        return tensor

    @contextlib.contextmanager
    def on_stream(self, stream: FakeStream) -> Iterator[None]:
        self._current.append(stream)
        try:
            yield
        finally:
            self._current.pop()

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        tensor = self._buffer(shape)
        self.memory[tensor.data_ptr()] = tensor
        self.allocations.append(self._current[-1].cuda_stream if self._current else None)
        return tensor

    def pinned(self, shape: tuple[int, ...]) -> torch.Tensor:
        tensor = self._buffer(shape)
        self.pinned_addresses.add(tensor.data_ptr())
        return tensor

    def new_graph(self) -> FakeGraph:
        return FakeGraph(self)

    @contextlib.contextmanager
    def capture(self, graph: FakeGraph, stream: FakeStream) -> Iterator[None]:
        self.capturing = (graph, stream)
        try:
            yield
        finally:
            self.capturing = None


def fake_tensorrt(cuda: FakeCuda, refuse_in_capture: bool = False) -> types.SimpleNamespace:
    """The ``tensorrt`` module over ``cuda``; ``refuse_in_capture``: execute_async_v3 returns
    False while a CUDA graph is being captured."""
    trt = types.SimpleNamespace(__version__="10.99.0-fake")
    trt.built: list[dict] = []  # the flags of every build

    class Logger:
        WARNING = "warning"

        def __init__(self, level: str):
            self.level = level

    trt.Logger = Logger
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.DataType = types.SimpleNamespace(FLOAT="float", HALF="half")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(TF32="tf32", FP16="fp16")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="json")

    class Network:
        def __init__(self, flags: int):
            self.flags = flags
            self.onnx = b""

    class Cache:
        def serialize(self) -> memoryview:
            return memoryview(b"timing")

    class Config:
        def __init__(self) -> None:
            self.flags = {"tf32"}  # TensorRT's default
            self.builder_optimization_level = 3
            self.progress_monitor = None
            self.profiling_verbosity = "layer_names_only"  # TensorRT's default

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def create_timing_cache(self, data: bytes) -> Cache:
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
            return True

        def get_timing_cache(self) -> Cache:
            return Cache()

    class Builder:
        def __init__(self, logger: Logger):
            pass

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Network, config: Config) -> memoryview:
            header = {
                "strongly_typed": bool(network.flags & (1 << 1)),
                "flags": sorted(config.flags),
                "detailed": config.profiling_verbosity == "detailed",
            }
            trt.built.append(header)
            return memoryview(MAGIC + json.dumps(header).encode() + b"\n" + network.onnx)

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger):
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx = Path(path).read_bytes()
            return True

    class Context:
        def __init__(self, engine: Engine):
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.enqueues = 0

        def set_tensor_address(self, name: str, address: int) -> bool:
            if address not in cuda.memory or name not in self.engine.names:
                return False
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if cuda.capturing is not None:
                graph, stream = cuda.capturing
                assert stream.cuda_stream == stream_handle, "enqueued on another stream"
                if refuse_in_capture:
                    return False
                bound = dict(self.addresses)
                graph.ops.append(lambda: self._run(bound))
                return True
            self.enqueues += 1
            cuda.events.append(("enqueue", stream_handle))
            bound = dict(self.addresses)
            cuda.streams[stream_handle].enqueue(lambda: self._run(bound))
            return True

        def _run(self, addresses: dict[str, int]) -> None:
            session = self.engine.session
            feeds = {i.name: cuda.memory[addresses[i.name]].numpy() for i in session.get_inputs()}
            names = [o.name for o in session.get_outputs()]
            for name, value in zip(names, session.run(names, feeds), strict=True):
                torch.Tensor.copy_(
                    cuda.memory[addresses[name]], torch.from_numpy(np.asarray(value))
                )

    class Engine:
        def __init__(self, onnx: bytes, header: dict):
            import onnxruntime

            self.header = header
            self.onnx = onnx
            self.session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            self.inputs = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
            self.outputs = {o.name: tuple(o.shape) for o in self.session.get_outputs()}
            self.names = [*self.inputs, *self.outputs]
            self.num_io_tensors = len(self.names)
            self.contexts: list[Context] = []

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> str:
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.inputs.get(name) or self.outputs[name]

        def get_tensor_dtype(self, name: str) -> str:
            return trt.DataType.FLOAT

        def create_engine_inspector(self) -> types.SimpleNamespace:
            """Layer details as TensorRT gives them: names only unless built DETAILED; a
            node computes in half when the graph's casts make it so and the network is
            strongly typed (weakly typed without BuilderFlag.FP16 runs them as fp32)."""
            import onnx

            model = onnx.load_from_string(self.onnx)
            half_values = {
                node.output[0]
                for node in model.graph.node
                if node.op_type == "Cast"
                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute)
            }
            layers = []
            for node in model.graph.node:
                if not self.header.get("detailed"):
                    layers.append(node.name)
                    continue
                half = (self.header["strongly_typed"] or "fp16" in self.header["flags"]) and any(
                    i in half_values for i in node.input
                )
                fmt = "Row major linear FP16 format" if half else "Row major linear FP32"
                if half:
                    half_values.update(node.output)
                layers.append({"Name": node.name, "Outputs": [{"Format/Datatype": fmt}]})
            text = json.dumps({"Layers": layers})
            return types.SimpleNamespace(get_engine_information=lambda fmt: text)

        def create_execution_context(self) -> Context:
            context = Context(self)
            self.contexts.append(context)
            return context

    class Runtime:
        def __init__(self, logger: Logger):
            self.engines: list[Engine] = []

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None
            header, onnx = data[len(MAGIC) :].split(b"\n", 1)
            engine = Engine(onnx, json.loads(header))
            trt.engines.append(engine)
            return engine

    trt.engines = []
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.Runtime = Runtime
    return trt


def install(monkeypatch, cuda: FakeCuda, trt: types.SimpleNamespace) -> None:
    """Make the tensorrt backend (and selection) use the doubles."""
    from engines import select, tensorrt_engine
    from export import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_engine, "cuda_runtime", lambda device: cuda)
    real_installed = select._installed
    monkeypatch.setattr(
        select, "_installed", lambda module: module == "tensorrt" or real_installed(module)
    )
    monkeypatch.setattr(select, "_cuda_available", lambda: True)
