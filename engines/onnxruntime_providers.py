"""ONNX Runtime execution providers: which to ask for, proof that they load, and a check that
a session runs as asked.

- CUDA EP, in fp32 and fp16 alike, with ``use_tf32=0`` (float32 layers stay float32, as in
  every backend). The fp16 graph is the mixed-precision export: its casts decide what runs in
  half, and the CUDA EP runs each node in the type the graph gives it.
- ONNX Runtime's TensorRT EP is not asked for. Its TensorRT network is weakly typed (the EP
  has no option for a strongly typed network), so the fp16 graph's casts are only hints and
  TensorRT may run them as fp32 layers (``trt_fp16_enable=0``) or run the float32 keypoint and
  motion math in fp16 (``=1``); and it has no option to turn TF32 off. TensorRT runs through
  the ``tensorrt`` backend instead, strongly typed. :mod:`engines.onnxruntime_session` still
  handles a provider set with the TensorRT EP correctly (imports ``tensorrt`` first) for
  callers that ask for one.
- Before any export, a tiny session proves that the CUDA EP really loads (the onnxruntime-gpu
  wheel is installed and finds its CUDA and cuDNN libraries, preloaded with
  ``onnxruntime.preload_dlls()`` where available).
- After a session is created, :func:`verify_session` compares ``get_providers()`` and
  ``get_provider_options()`` with the request: ONNX Runtime only logs a warning when an EP
  cannot be created, and its Python wrapper retries a failed creation with default options
  (GPU 0, TF32 on). A requested GPU provider that is not active, or a critical option that
  differs, is an :class:`~engines.errors.EngineError`; smaller differences are notes.
- :func:`placement` counts the nodes that run on the CPU in a GPU session (from one profiled
  run): each costs copies between host and device per frame.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .device import Device
from .errors import EngineError, EngineWarning

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_EPS = (TENSORRT_EP, CUDA_EP)

_FIX_GPU = (
    "install onnxruntime-gpu with its CUDA libraries: pip uninstall -y onnxruntime "
    "onnxruntime-gpu && pip install 'avatarcam[gpu]' (see README, Set up: NVIDIA GPU), or use "
    "--device cpu"
)
# Options whose difference means the session does not compute what was asked.
_CRITICAL = ("device_id", "use_tf32", "trt_fp16_enable")

Providers = list[tuple[str, dict[str, str]]]


def provider_list(ort: Any, device: Device | str, precision: str) -> Providers:
    """Execution providers with options, in order of preference, for ``device`` (the same in
    both precisions: see the module docstring)."""
    device = Device.parse(str(device))
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"unknown precision '{precision}': expected fp32 or fp16")
    available = set(ort.get_available_providers())
    providers: Providers = []
    if device.is_cuda and CUDA_EP in available:
        providers.append(
            (
                CUDA_EP,
                {
                    "device_id": str(device.ordinal),
                    "cudnn_conv_algo_search": "EXHAUSTIVE",
                    "do_copy_in_default_stream": "1",
                    # TF32 convolutions cost ~1e-3 of accuracy: off for every float32 layer.
                    "use_tf32": "0",
                },
            )
        )
    providers.append((CPU_EP, {}))
    return providers


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """``NVIDIA_TF32_OVERRIDE=0`` while the block runs (TensorRT builds no TF32 tactics and
    cuBLAS/cuDNN handles created meanwhile use no TF32); the previous value is restored."""
    saved = os.environ.get("NVIDIA_TF32_OVERRIDE")
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("NVIDIA_TF32_OVERRIDE", None)
        else:
            os.environ["NVIDIA_TF32_OVERRIDE"] = saved


def preload_libraries(ort: Any) -> None:
    """Let onnxruntime-gpu find the CUDA and cuDNN libraries of the nvidia-* wheels (or of a
    compatible PyTorch) before a CUDA session is created (onnxruntime >= 1.21)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):  # a missing library shows in the probe below
            preload()


def _tiny_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="probe")],
        "cuda-probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


@functools.lru_cache(maxsize=8)
def _probe_cached(ort: Any, device_id: int) -> str | None:
    return _probe(ort, device_id)


def _probe(ort: Any, device_id: int) -> str | None:
    if CUDA_EP not in ort.get_available_providers():
        return (
            f"this onnxruntime ({ort.__version__}) has no CUDA execution provider (the "
            "CPU-only 'onnxruntime' wheel is installed)"
        )
    preload_libraries(ort)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(
                _tiny_model(),
                sess_options=options,
                providers=[CUDA_EP, CPU_EP],
                provider_options=[{"device_id": str(device_id)}, {}],
            )
    except Exception as exc:
        return f"a session with the CUDA provider failed: {type(exc).__name__}: {exc}"
    active = list(session.get_providers())
    if not active or active[0] != CUDA_EP:
        return (
            f"the CUDA provider did not load (active: {active}); its CUDA 12 / cuDNN 9 "
            "libraries were not found"
        )
    return None


def cuda_provider_problem(ort: Any, device: Device | str = "cuda") -> str | None:
    """Why ONNX Runtime's CUDA EP cannot run on ``device`` (tried with a tiny session, once per
    process), or None when it can."""
    return _probe_cached(ort, Device.parse(str(device)).ordinal)


def probe_cuda(ort: Any, device: Device | str) -> None:
    """Raise EngineError unless a tiny session runs on the CUDA EP of ``device`` (cached per
    process). Done before exporting, so a CPU-only wheel costs nothing."""
    problem = cuda_provider_problem(ort, device)
    if problem is not None:
        raise EngineError(f"ONNX Runtime cannot use {device}: {problem}. Fix: {_FIX_GPU}")


def verify_session(
    session: Any, requested: Providers, device: Device | str, what: str
) -> list[str]:
    """Compare the session's active providers and options with ``requested``.

    Raises EngineError when the session does not run as asked: a GPU device without a GPU
    provider, a requested GPU provider that is not active, or another GPU, TF32 or fp16 flag
    than requested (the wrapper's silent retry with default options). Returns notes about
    smaller option differences, each also issued as an EngineWarning.
    """
    device = Device.parse(str(device))
    active = list(session.get_providers())
    actual = session.get_provider_options()
    notes: list[str] = []
    if device.is_cuda and not any(p in GPU_EPS for p in active):
        raise EngineError(
            f"ONNX Runtime could not start a GPU execution provider for {what} (active: "
            f"{active}). Fix: {_FIX_GPU}"
        )
    for name, options in requested:
        if name not in active:
            if name == CPU_EP:
                continue
            hint = " (libnvinfer.so.10 from TensorRT 10 not found?)" if name == TENSORRT_EP else ""
            raise EngineError(
                f"ONNX Runtime did not start the requested {name} for {what}{hint} (active: "
                f"{active})"
            )
        got = actual.get(name, {})
        for key, want in options.items():
            have = got.get(key)
            if have is None or str(have) == want:
                continue
            if key in _CRITICAL:
                raise EngineError(
                    f"ONNX Runtime created {what} with {name} option {key}={have}, not the "
                    f"requested {want} (it retried a failed session with default options; see "
                    f"the 'EP Error' lines above). Fix: {_FIX_GPU}"
                )
            notes.append(f"{what}: {name} option {key} is {have}, not {want}")
    for note in notes:
        warnings.warn(note, EngineWarning, stacklevel=2)
    return notes


def profiled_options(options: Any, folder: Path) -> Any:
    """``options`` with profiling on, writing into ``folder``."""
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "placement")
    return options


def placement(profile: Path) -> dict[str, list[str]]:
    """Node names by the provider that ran them, from an ONNX Runtime profile file."""
    events = json.loads(Path(profile).read_text())
    result: dict[str, list[str]] = {}
    seen = set()
    for event in events:
        if event.get("cat") != "Node":
            continue
        args = event.get("args", {})
        provider = args.get("provider")
        name = str(event.get("name", "")).removesuffix("_kernel_time")
        if provider is None or name in seen or not event.get("name", "").endswith("_kernel_time"):
            continue
        seen.add(name)
        result.setdefault(provider, []).append(f"{name} ({args.get('op_name', '?')})")
    return result


def half_nodes(profile: Path) -> tuple[int, dict[str, list[str]]]:
    """(compute nodes, {provider: the compute nodes with a float16 output}) from an ONNX
    Runtime profile file: evidence that an fp16 session really computes in half (Casts are
    not compute)."""
    events = json.loads(Path(profile).read_text())
    seen = set()
    total = 0
    half: dict[str, list[str]] = {}
    for event in events:
        name = str(event.get("name", ""))
        args = event.get("args", {})
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or name in seen:
            continue
        seen.add(name)
        op = args.get("op_name", "?")
        if op == "Cast":
            continue
        total += 1
        types = [t for shape in args.get("output_type_shape", []) for t in shape]
        if "float16" in types:
            node = f"{name.removesuffix('_kernel_time')} ({op})"
            half.setdefault(args.get("provider", "?"), []).append(node)
    return total, half


def cpu_nodes_note(by_provider: Mapping[str, list[str]], what: str) -> str | None:
    """A note naming the nodes of a GPU session that run on the CPU; None when none do."""
    cpu = list(by_provider.get(CPU_EP, []))
    if not cpu:
        return None
    total = sum(len(v) for v in by_provider.values())
    shown = ", ".join(cpu[:6]) + (" ..." if len(cpu) > 6 else "")
    return (
        f"{what}: {len(cpu)} of {total} nodes run on the CPU with copies to and from the GPU "
        f"({shown}); an onnxruntime-gpu without CUDA kernels for them? Fix: pip install "
        "'avatarcam[gpu]' (onnxruntime-gpu >= 1.21), or use --backend tensorrt"
    )


def temporary_profile_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="avatarcam-ort-profile-")
