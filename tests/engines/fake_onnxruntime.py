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
        self.half = False  # the profiled Conv has a float16 output (an fp16 graph)
        self.fallback = True  # the wrapper's run-time fallback (Session._enable_fallback)

    def disable_fallback(self):
        self.fallback = False

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
                "args": {
                    "op_name": "Conv",
                    "provider": "CUDAExecutionProvider",
                    "output_type_shape": [{"float16" if self.half else "float": [1, 4]}],
                },
            }
        ]
        path = self.profile_dir / f"{self.graph.name}.json"
        path.write_text(json.dumps(events))
        return str(path)


# Provider option names the real execution providers accept, for onnxruntime(-gpu) 1.21 to 1.31
# (pyproject's range). ONNX Runtime parses them with ProviderOptionsParser, which fails on any
# other name ("Unknown provider option"). Sources: microsoft/onnxruntime
# include/onnxruntime/core/providers/cuda/cuda_provider_options.h (OrtCUDAProviderOptionsV2),
# onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc (provider_option_names),
# include/onnxruntime/core/providers/tensorrt/tensorrt_provider_options.h
# (OrtTensorRTProviderOptionsV2) and onnxruntime/core/providers/tensorrt/
# tensorrt_execution_provider_info.cc.
CUDA_OPTIONS = frozenset(
    {
        "device_id",
        "has_user_compute_stream",
        "user_compute_stream",
        "do_copy_in_default_stream",
        "cudnn_conv_algo_search",
        "gpu_mem_limit",
        "arena_extend_strategy",
        "gpu_external_alloc",
        "gpu_external_free",
        "gpu_external_empty_cache",
        "cudnn_conv_use_max_workspace",
        "enable_cuda_graph",
        "cudnn_conv1d_pad_to_nc1d",
        "tunable_op_enable",
        "tunable_op_tuning_enable",
        "tunable_op_max_tuning_duration_ms",
        "enable_skip_layer_norm_strict_mode",
        "prefer_nhwc",
        "use_ep_level_unified_stream",
        "use_tf32",
        "gelu_disable_half2",
        "fuse_conv_bias",
        "sdpa_kernel",
    }
)
TENSORRT_OPTIONS = frozenset(
    {
        "device_id",
        "has_user_compute_stream",
        "user_compute_stream",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "trt_max_workspace_size",
        "trt_fp16_enable",
        "trt_bf16_enable",
        "trt_int8_enable",
        "trt_int8_calibration_table_name",
        "trt_int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_dump_subgraphs",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_decryption_enable",
        "trt_engine_decryption_lib_path",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
        "trt_weight_stripped_engine_enable",
        "trt_onnx_model_folder_path",
        "trt_engine_cache_prefix",
        "trt_engine_hw_compatible",
        "trt_op_types_to_exclude",
    }
)
KNOWN_OPTIONS = {
    "CUDAExecutionProvider": CUDA_OPTIONS,
    "TensorrtExecutionProvider": TENSORRT_OPTIONS,
    "CPUExecutionProvider": frozenset(),
}
# What get_provider_options() reports for options nobody set (the providers' defaults).
DEFAULTS = {
    "CUDAExecutionProvider": {
        "device_id": "0",
        "use_tf32": "1",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "do_copy_in_default_stream": "1",
    },
    "TensorrtExecutionProvider": {"device_id": "0", "trt_fp16_enable": "0"},
    "CPUExecutionProvider": {},
}


class FakeOrt:
    """The module: ``available`` providers; sessions activate ``active`` with ``options``
    (None: what was requested, over the providers' defaults).

    As the real library: a provider option name the provider does not have fails the session
    creation; so does a provider in ``unloadable`` (its shared library is not found), and
    ``needs_libnvinfer`` (when it returns False) for the TensorRT EP. Then, as the Python
    wrapper (onnxruntime_inference_collection.InferenceSession.__init__), a failed creation is
    retried once with ``[CUDA, CPU]`` (TensorRT EP requested and available) or ``[CPU]``, and
    *no provider options*, unless the session was created with ``enable_fallback=0``.
    ``graphs`` maps model file names to the GraphSpec a session of that file has.
    """

    __version__ = "1.99.0"
    OrtValue = FakeOrtValue
    GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)
    ExecutionMode = types.SimpleNamespace(ORT_SEQUENTIAL=0)

    def __init__(
        self,
        available,
        active=None,
        options=None,
        unloadable=(),
        needs_libnvinfer=None,
        graphs=None,
    ):
        self.available = list(available)
        self.active = list(active if active is not None else available)
        self.options = options  # None: the requested options
        self.unloadable = set(unloadable)
        self.needs_libnvinfer = needs_libnvinfer  # () -> bool: libnvinfer.so.10 is loaded
        self.graphs = dict(graphs or {})
        self.sessions: list[dict] = []
        self.printed: list[str] = []

    def preload_dlls(self):
        self.preloaded = True

    def get_available_providers(self):
        return list(self.available)

    class SessionOptions:
        log_severity_level = 0
        optimized_model_filepath = ""

    def _create(self, model, sess_options, providers, provider_options):
        providers = list(providers or [])
        provider_options = list(provider_options or [{} for _ in providers])
        requested = dict(zip(providers, provider_options, strict=True))
        for name, options in requested.items():
            if name not in self.available:
                continue  # the real one warns and drops it
            unknown = sorted(set(options) - KNOWN_OPTIONS[name])
            if unknown:
                raise RuntimeError(f'[ONNXRuntimeError] : Unknown provider option: "{unknown[0]}".')
            if name in self.unloadable or (
                name == "TensorrtExecutionProvider"
                and self.needs_libnvinfer is not None
                and not self.needs_libnvinfer()
            ):
                raise RuntimeError(
                    f"[ONNXRuntimeError] : 1 : FAIL : {name} could not be created: "
                    "libnvinfer.so.10: cannot open shared object file"
                )
        active = [
            p
            for p in self.active
            if (p in providers and p in self.available) or p == "CPUExecutionProvider"
        ]
        if self.options is not None:
            options = self.options
        else:
            options = {p: {**DEFAULTS[p], **requested.get(p, {})} for p in active}
        path = getattr(sess_options, "optimized_model_filepath", "")
        if path:
            Path(path).write_bytes(Path(model).read_bytes() if isinstance(model, str) else model)
        name = Path(model).name if isinstance(model, str) else "probe"
        graph = self.graphs.get(name) or types.SimpleNamespace(inputs=[], outputs=[], name=name)
        profile_dir = None
        if getattr(sess_options, "enable_profiling", False):
            profile_dir = Path(sess_options.profile_file_prefix).parent
        return FakeSession(graph, active, options, profile_dir)

    def InferenceSession(
        self, model, sess_options=None, providers=None, provider_options=None, **kwargs
    ):
        record = {
            "model": model,
            "requested": dict(zip(providers or [], provider_options or [], strict=False)),
            "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"),
            "retried": False,
        }
        self.sessions.append(record)
        try:
            return self._create(model, sess_options, providers, provider_options)
        except RuntimeError as exc:
            if int(kwargs.get("enable_fallback", 1)) != 1:
                raise
            trt = "TensorrtExecutionProvider"
            if "CUDAExecutionProvider" in (providers or []) and trt in (providers or []):
                fallback = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                fallback = ["CPUExecutionProvider"]
            self.printed.append(f"EP Error {exc} when using {providers}")
            record["retried"] = True
            return self._create(model, sess_options, fallback, None)
