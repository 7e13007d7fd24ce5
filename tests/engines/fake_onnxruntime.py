"""A stand-in for the parts of the onnxruntime module that the onnxruntime backend uses on a
GPU: sessions with chosen active providers and options, OrtValues that live "on cuda" (numpy
arrays that count their downloads), and I/O binding. Each fake session computes its outputs
from its inputs with a small numpy function, so wrong bindings give wrong numbers."""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.iospec import GraphSpec


class FakeOrtValue:
    downloads = 0  # numpy() calls on device values, over all values

    def __init__(self, data: np.ndarray, device: str):
        self.data = data
        self.device = device

    @classmethod
    def ortvalue_from_numpy(cls, array, device="cpu", device_id=0):
        return cls(array if device == "cpu" else np.array(array, np.float32), device)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device="cpu", device_id=0):
        return cls(np.zeros(shape, dtype), device)

    def update_inplace(self, array):
        np.copyto(self.data, array)

    def numpy(self):
        if self.device != "cpu":
            FakeOrtValue.downloads += 1
            return self.data.copy()
        return self.data

    def data_ptr(self):
        return self.data.ctypes.data


class FakeBinding:
    """As ONNX Runtime's IOBinding: an input on another device than the session's is copied
    to the session's device when it is bound (later changes to it are not seen); outputs bound
    to another device are copied into at the end of each run."""

    def __init__(self, device: str):
        self.device = device
        self.inputs: dict[str, FakeOrtValue] = {}
        self.outputs: dict[str, FakeOrtValue | str] = {}

    def bind_ortvalue_input(self, name, value):
        if value.device != self.device:
            value = FakeOrtValue(value.data.copy(), self.device)
        self.inputs[name] = value

    def bind_ortvalue_output(self, name, value):
        self.outputs[name] = value

    def bind_output(self, name, device="cpu", device_id=0):
        self.outputs[name] = device

    def copy_outputs_to_cpu(self):
        return [value.data.copy() for value in self.outputs.values()]

    def get_outputs(self):
        return list(self.outputs.values())


def default_compute(graph: GraphSpec) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Each output: the sum of the input means, plus the output's index."""

    def compute(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = sum(float(v.mean()) for v in inputs.values())
        return {
            t.name: np.full(t.shape, total + i, np.float32) for i, t in enumerate(graph.outputs)
        }

    return compute


class FakeSession:
    def __init__(self, graph: GraphSpec, providers, options, profile_dir: Path | None = None):
        self.graph = graph
        self._providers = providers
        self._options = options
        self.compute = default_compute(graph)
        self.runs = 0
        self.profile_dir = profile_dir
        self.cpu_nodes: list[str] = []

    def get_inputs(self):
        return [types.SimpleNamespace(name=t.name, shape=list(t.shape)) for t in self.graph.inputs]

    def get_outputs(self):
        return [types.SimpleNamespace(name=t.name, shape=list(t.shape)) for t in self.graph.outputs]

    def get_providers(self):
        return list(self._providers)

    def get_provider_options(self):
        return {name: dict(self._options.get(name, {})) for name in self._providers}

    def io_binding(self):
        gpu = any(p != "CPUExecutionProvider" for p in self._providers)
        return FakeBinding("cuda" if gpu else "cpu")

    def run_with_iobinding(self, binding: FakeBinding):
        self.runs += 1
        inputs = {name: value.data for name, value in binding.inputs.items()}
        for name, array in self.compute(inputs).items():
            target = binding.outputs[name]
            if isinstance(target, str):
                binding.outputs[name] = FakeOrtValue(array, target)
            else:
                np.copyto(target.data, array)

    def end_profiling(self) -> str:
        assert self.profile_dir is not None
        events = [
            {
                "cat": "Node",
                "name": f"{name}_kernel_time",
                "args": {"op_name": "GridSample", "provider": "CPUExecutionProvider"},
            }
            for name in self.cpu_nodes
        ] + [
            {
                "cat": "Node",
                "name": "conv_kernel_time",
                "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"},
            }
        ]
        path = self.profile_dir / f"{self.graph.name}.json"
        path.write_text(json.dumps(events))
        return str(path)


class FakeOrt:
    """The module: ``available`` providers; sessions activate ``active`` with ``options``."""

    __version__ = "1.99.0"
    OrtValue = FakeOrtValue

    def __init__(self, available, active=None, options=None):
        self.available = list(available)
        self.active = list(active if active is not None else available)
        self.options = options  # None: the requested options
        self.sessions: list[dict] = []

    def preload_dlls(self):
        self.preloaded = True

    def get_available_providers(self):
        return list(self.available)

    class SessionOptions:
        log_severity_level = 0

    def InferenceSession(self, model, sess_options=None, providers=(), provider_options=()):
        requested = dict(zip(providers, provider_options, strict=True))
        self.sessions.append(
            {
                "model": model,
                "requested": requested,
                "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"),
            }
        )
        active = [p for p in self.active if p in providers or p == "CPUExecutionProvider"]
        options = self.options if self.options is not None else requested
        graph = types.SimpleNamespace(inputs=[], outputs=[], name="probe")
        return FakeSession(graph, active, options)
