"""The OpenVINO backend: the exported ONNX graphs compiled by OpenVINO for a CPU, an Intel GPU
or an NPU.

Devices (``--device``, case-insensitive): ``cpu``; ``gpu`` or ``gpu.N`` (OpenVINO's GPU plugin:
Intel integrated or discrete graphics, the GPU most laptops have; not an NVIDIA GPU, which is
``cuda``); ``npu`` (Intel AI Boost and other NPUs OpenVINO drives). A device OpenVINO does not
see here is refused with the list of those it does see.

Precision is always set explicitly: OpenVINO's CPU plugin otherwise picks bf16 on CPUs that
have it, which is slower than f32 without AMX and less accurate. ``fp32`` compiles with
``INFERENCE_PRECISION_HINT=f32``, ``fp16`` with ``f16``; ``int8`` runs the frame graph quantized
by NNCF (:mod:`engines.int8`) with the layers it left in float at f32. Every model compiles for
latency (``PERFORMANCE_HINT=LATENCY``, :func:`export.threads.inference_threads` threads) and
compiled blobs are kept in OpenVINO's own model cache (``CACHE_DIR`` under the engine cache),
so later starts skip compilation.

Buffers: each graph has one infer request; inputs are OpenVINO tensors that share fixed host
arrays (the avatar graph's outputs are copied once into the arrays the frame graph reads, the
motion transfer once per reference frame), so per frame only the driving frame is copied in
and the frame and keypoints are copied out. :meth:`Engine.run` uses a fresh request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import missing_dependency
from export.iospec import GraphSpec, ModelIO
from export.threads import inference_threads

from .base import Engine
from .calibration import CalibrationSource
from .errors import EngineError

log = logging.getLogger(__name__)

#: Our device names (lower case) -> OpenVINO's. ``gpu.N`` maps to ``GPU.N``.
_DEVICE = re.compile(r"^(cpu|gpu|npu)(\.(\d+))?$")
#: Inference precision hints by --precision (int8: the float layers of the quantized graph).
PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "int8": "f32"}


def import_openvino() -> Any:
    """Import openvino or raise MissingDependencyError naming the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise missing_dependency("openvino", "cpu", "the openvino backend") from exc
    return openvino


def is_openvino_device(device: str) -> bool:
    """Whether ``device`` names an OpenVINO device (cpu, gpu, gpu.N, npu)."""
    return _DEVICE.match(device.strip().lower()) is not None


def openvino_device(device: str) -> str:
    """Our device string -> OpenVINO's name (``gpu.1`` -> ``GPU.1``); EngineError if invalid."""
    match = _DEVICE.match(device.strip().lower())
    if match is None:
        raise EngineError(
            f"the openvino backend cannot run on device '{device}': expected cpu, gpu, gpu.N or "
            "npu (an NVIDIA GPU is 'cuda': use --backend tensorrt, onnxruntime or torch for it)"
        )
    kind, _, index = match.groups()
    return kind.upper() + (f".{index}" if index is not None else "")


def check_device(core: Any, ov_device: str) -> None:
    """Raise EngineError unless OpenVINO sees ``ov_device`` here, listing those it sees."""
    available = list(core.available_devices)
    kind = ov_device.split(".", 1)[0]
    # Plain "GPU" is the first GPU; a single GPU lists as "GPU" and answers to "GPU.0" too.
    if ov_device in available or (ov_device == kind and any(d.startswith(kind) for d in available)):
        return
    if ov_device == f"{kind}.0" and kind in available:
        return
    seen = ", ".join(d.lower() for d in available) or "none"
    hint = {
        "GPU": "install Intel's GPU driver (intel-opencl-icd / compute runtime)",
        "NPU": "install Intel's NPU driver (intel-npu-driver / Windows NPU driver)",
    }.get(kind, "check the device name")
    raise EngineError(
        f"OpenVINO sees no {ov_device} device here (devices it sees: {seen}). {hint}, or use "
        "--device cpu."
    )


def compile_config(ov_device: str, precision: str, cache_dir: Path | None) -> dict[str, Any]:
    """Properties for ``compile_model``: explicit precision, latency, threads, model cache."""
    if precision not in PRECISION_HINT:
        expected = list(PRECISION_HINT)
        raise EngineError(f"unknown precision '{precision}': expected one of {expected}")
    if ov_device.startswith("NPU") and precision == "fp32":
        raise EngineError(
            "NPUs compute in f16 or int8, not f32: use --precision fp16 or int8 with --device "
            "npu, or --device cpu for fp32"
        )
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": PRECISION_HINT[precision],
    }
    if ov_device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = inference_threads()
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


def _type_name(element_type: Any) -> str:
    """``f32`` for OpenVINO's element type f32 (its repr is ``<Type: 'float32'>``)."""
    name = getattr(element_type, "get_type_name", None)
    return str(name()) if callable(name) else str(element_type)


class OpenVinoEngine(Engine):
    """Runs the avatar and frame graphs as two compiled OpenVINO models."""

    backend = "openvino"

    def __init__(self, compiled: Mapping[str, Any], io: ModelIO, precision: str, device: str):
        super().__init__(io, precision, device)
        self._ov = import_openvino()
        self._compiled = dict(compiled)  # by graph name
        for graph in (io.avatar, io.frame):
            self._check_model(graph)
        # One host array per input name; the requests' input tensors share their memory.
        self._host: dict[str, np.ndarray] = {}
        for spec in (*io.avatar.inputs, *io.frame.inputs):
            self._host.setdefault(spec.name, np.zeros(spec.shape, np.float32))
        self._requests: dict[str, Any] = {}
        for graph in (io.avatar, io.frame):
            request = self._compiled[graph.name].create_infer_request()
            for name in graph.input_names:
                request.set_tensor(name, self._ov.Tensor(self._host[name], shared_memory=True))
            self._requests[graph.name] = request
        ov_device = openvino_device(device)
        try:
            self.device_name = str(
                self._compiled[io.frame.name].get_property("EXECUTION_DEVICES")[0]
            )
        except Exception:
            self.device_name = ov_device
        self.hint = self._compiled[io.frame.name].get_property("INFERENCE_PRECISION_HINT")
        self.int8_verdict: Any = None  # engines.int8_verify.Verdict of an int8 frame graph

    def describe(self) -> str:
        return (
            f"{self.backend} ({self.precision}, {self.device}: {self.device_name}, "
            f"inference precision {_type_name(self.hint)})"
        )

    def _check_model(self, graph: GraphSpec) -> None:
        compiled = self._compiled[graph.name]
        inputs = [(i.get_any_name(), tuple(i.get_shape())) for i in compiled.inputs]
        outputs = [o.get_any_name() for o in compiled.outputs]
        want_in = [(t.name, t.shape) for t in graph.inputs]
        if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(graph.output_names):
            raise EngineError(
                f"the {graph.name} model does not match the I/O spec: inputs {inputs}, outputs "
                f"{outputs}; expected {want_in} -> {graph.output_names}"
            )

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        host = self._host[name]
        if array is not host:
            np.copyto(host, array)
        return host

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        return np.array(handle, dtype=np.float32, copy=True)

    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A request of its own over the caller's arrays: the session's buffers stay as they are.
        request = self._compiled[graph.name].create_infer_request()
        for name in graph.input_names:
            request.set_tensor(name, self._ov.Tensor(np.ascontiguousarray(feeds[name])))
        request.infer()
        return {name: request.get_tensor(name).data.copy() for name in graph.output_names}

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        for name in graph.input_names:
            if feeds[name] is not self._host[name]:
                np.copyto(self._host[name], feeds[name])
        request = self._requests[graph.name]
        request.infer()
        outputs = {name: request.get_tensor(name).data for name in graph.output_names}
        if graph.name == self.io.avatar.name:
            # The avatar state goes into the arrays the frame graph's request reads.
            for name, value in outputs.items():
                if name in self._host:
                    np.copyto(self._host[name], value)
                    outputs[name] = self._host[name]
        return outputs

    def _release(self) -> None:
        self._requests.clear()
        self._compiled.clear()
        self._host.clear()


def create_openvino_engine(
    checkpoint: str | Path,
    config: Any,
    io: ModelIO,
    precision: str,
    device: str,
    cache: Any,
    calibration: CalibrationSource | None = None,
    recalibrate: bool = False,
    require_verified: bool = False,
) -> OpenVinoEngine:
    """Export (or reuse) the fp32 ONNX files, quantize the frame graph for int8 (or reuse the
    cached quantized model), compile both graphs for ``device`` and start the engine.

    int8 engines carry the verdict of the int8 check (``engine.int8_verdict``); with
    ``require_verified`` (``--precision auto``) a failed check raises
    :class:`~engines.int8_verify.Int8Rejected` before anything is compiled."""
    from .onnx_recipe import onnx_artifacts

    ov = import_openvino()
    core = ov.Core()
    ov_device = openvino_device(device)
    check_device(core, ov_device)
    compiled_cache = cache.root / "openvino" / "compiled"
    properties = compile_config(ov_device, precision, compiled_cache)  # checks before exporting
    onnx_paths, onnx_entry = onnx_artifacts(
        cache, checkpoint, config, io.resolution, io.batch, "fp32"
    )
    models = {graph: core.read_model(str(path)) for graph, path in onnx_paths.items()}
    verdict = None
    if precision == "int8":
        from .int8 import quantized_frame_model
        from .int8_verify import Int8Rejected

        path, verdict = quantized_frame_model(
            cache, onnx_paths, onnx_entry, config, io, ov_device, calibration, recalibrate
        )
        if require_verified and not verdict.passed:
            raise Int8Rejected(verdict)
        models[io.frame.name] = core.read_model(str(path))
    compiled_cache.mkdir(parents=True, exist_ok=True)
    compiled = {}
    for graph, model in models.items():
        # The avatar graph runs once per avatar: it stays f32 (fp16 where asked) even for int8.
        try:
            compiled[graph] = core.compile_model(model, ov_device, properties)
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise EngineError(
                f"OpenVINO could not compile the {graph} graph for {ov_device} ({precision}): "
                f"{type(exc).__name__}: {text[0] if text else ''}"
            ) from exc
    engine = OpenVinoEngine(compiled, io, precision, device.strip().lower())
    engine.int8_verdict = verdict
    if verdict is not None:
        engine.notes.append(
            f"int8 check {'passed' if verdict.passed else 'FAILED'}: {verdict.line()}"
        )
    return engine
