"""What ``--doctor`` tries, one probe per concern: PyTorch and the GPU, ONNX Runtime's execution
providers, TensorRT, OpenVINO, the virtual camera, cameras, the checkpoint, the display and the
face detector.

Every probe actually tries the thing (a tiny convolution, a tiny ONNX Runtime session per
provider, a TensorRT builder, opening the virtual camera) and returns :class:`Check` results:
what was found and, for each problem, the one command that fixes it. Probes never raise for
what they find; :mod:`live.doctor` bounds them in time and turns a crash into a result too.
Heavy libraries are imported inside the probes, so the doctor starts even when they are broken.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "info", "warn", "fail"]

# The one command that fixes each problem.
FIX_TORCH_CUDA = (
    "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128  "
    "(a CUDA build; match your driver at https://pytorch.org/get-started)"
)
FIX_DRIVER = "install the NVIDIA driver (nvidia-smi must list the GPU), then reboot"
FIX_ORT_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'avatarcam[gpu]'"
FIX_ORT_CPU = "pip install 'avatarcam[cpu]'"
FIX_TENSORRT = "pip install 'avatarcam[gpu]'"
FIX_REINSTALL = "pip install --force-reinstall avatarcam   (or: pip install -e . in a checkout)"
V4L2_LOAD = 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Avatarcam"'
FIX_V4L2_INSTALL = f"sudo apt install v4l2loopback-dkms && {V4L2_LOAD}"
FIX_VIDEO_GROUP = 'sudo usermod -aG video "$USER"   (then log out and in again)'
FIX_OBS = (
    "install OBS Studio (https://obsproject.com), start it, click Start Virtual Camera once, "
    "then close it"
)
FIX_CAMERA = (
    "connect a webcam and close other apps using it (python run_live.py --list-cameras lists "
    "what works), or animate a file: python run_live.py --avatar me.jpg --input clip.mp4 "
    "--output out.mp4"
)
#: The fix for a GPU execution provider that is listed but does not load.
PROVIDER_FIX = {"TensorrtExecutionProvider": FIX_TENSORRT, "CUDAExecutionProvider": FIX_ORT_GPU}
#: ONNX Runtime "providers" that run nothing locally (remote inference endpoints).
NOT_COMPUTE = ("AzureExecutionProvider",)
FIX_DISPLAY = "run from a desktop session, or pass --no-preview"


@dataclass(frozen=True)
class Check:
    """One finding of the doctor."""

    section: str  # heading it is shown under: GPU, Backends, Virtual camera, ...
    name: str  # what was tried, e.g. "onnxruntime CUDAExecutionProvider"
    status: Status  # ok; info (optional, absent); warn (works, degraded); fail (run would not)
    detail: str  # what was found, one line
    fix: str | None = None  # the one command or step that fixes it
    key: str = ""  # stable id for the verdict, e.g. "torch:cuda", "ort:CPUExecutionProvider"


def version_of(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` that is installed."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# --- GPU and PyTorch ---------------------------------------------------------------------------


def nvidia_gpu_present() -> bool:
    """Whether the machine has an NVIDIA GPU with a driver, independently of PyTorch."""
    if Path("/proc/driver/nvidia/gpus").is_dir():
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def nvidia_driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(\S+)", text)
    return match.group(1) if match else None


def probe_torch() -> list[Check]:
    """A tiny convolution on the CPU and on every CUDA GPU PyTorch sees (cuDNN included)."""
    import torch

    checks = []
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    w = torch.full((1, 1, 1, 1), 2.0)
    ok = torch.equal(torch.nn.functional.conv2d(x, w), 2 * x)
    checks.append(
        Check(
            "Backends",
            "torch on cpu",
            "ok" if ok else "fail",
            f"a tiny convolution ran ({torch.get_num_threads()} threads)"
            if ok
            else "a tiny convolution gave a wrong result",
            None if ok else FIX_REINSTALL,
            key="torch:cpu",
        )
    )
    if not torch.cuda.is_available():
        gpu = nvidia_gpu_present()
        if torch.version.cuda is None:
            why = f"PyTorch {torch.__version__} is a CPU-only build"
            fix = FIX_TORCH_CUDA
        else:
            why = f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
            fix = FIX_DRIVER
        if gpu:
            detail = f"an NVIDIA GPU is present but {why}: everything runs on the CPU, slowly"
            checks.append(Check("GPU", "NVIDIA GPU", "warn", detail, fix, key="torch:cuda"))
        else:
            detail = "none found: avatarcam runs on the CPU (interactive, not real-time at 256px)"
            checks.append(Check("GPU", "NVIDIA GPU", "info", detail, key="torch:cuda"))
        return checks
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        name = (
            f"{props.name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), "
            f"sm_{props.major}{props.minor}"
        )
        try:
            y = torch.nn.functional.conv2d(x.to(device), w.to(device)).cpu()
            ok = torch.equal(y, 2 * x)
            detail = f"{name}; a tiny convolution ran (cuDNN {torch.backends.cudnn.version()})"
        except Exception as exc:
            ok, detail = False, f"{name}; a tiny convolution failed: {first_line(exc)}"
        key = "torch:cuda" if index == 0 else f"torch:{device}"
        fix = None if ok else FIX_TORCH_CUDA
        checks.append(Check("GPU", f"torch on {device}", "ok" if ok else "warn", detail, fix, key))
    return checks


# --- ONNX Runtime ------------------------------------------------------------------------------


def tiny_onnx_model() -> bytes:
    """A 1x1 convolution that doubles its input: the smallest graph that exercises cuDNN."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 1, 1, 1), 2.0, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def try_provider(ort: Any, model: bytes, provider: str) -> str | None:
    """Run the tiny model on ``provider`` alone (the CPU only as ONNX Runtime's own fallback);
    None when it ran there and right, else why not."""
    import numpy as np

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = (
        [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown provider: reported as a fall-back
            session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:
        return f"session failed: {first_line(exc)}"
    active = session.get_providers()
    if not active or active[0] != provider:
        return f"ONNX Runtime fell back to {active} (the provider's libraries did not load)"
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    (y,) = session.run(None, {"x": x})
    if not np.array_equal(y, 2 * x):
        return "the tiny session gave a wrong result"
    return None


def probe_onnxruntime(gpu: bool) -> list[Check]:
    """Every execution provider this onnxruntime has, tried with a tiny session."""
    dists = [d for d in ("onnxruntime", "onnxruntime-gpu") if version_of(d)]
    if not installed("onnxruntime"):
        fix = FIX_ORT_GPU if gpu else FIX_ORT_CPU
        why = "not installed: the torch backend runs instead, about 1.3x slower on the CPU"
        return [Check("Backends", "onnxruntime", "warn", why, fix, key="ort")]
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    checks = []
    if len(dists) > 1:
        detail = "both onnxruntime and onnxruntime-gpu are installed: they overwrite each other"
        fix = (
            FIX_ORT_GPU if gpu else f"pip uninstall -y onnxruntime onnxruntime-gpu && {FIX_ORT_CPU}"
        )
        checks.append(Check("Backends", "onnxruntime install", "warn", detail, fix, key="ort"))
    available = list(ort.get_available_providers())
    if gpu and "CUDAExecutionProvider" not in available:
        detail = f"{'/'.join(dists)} {ort.__version__} has no CUDA provider (CPU-only wheel)"
        checks.append(Check("Backends", "onnxruntime on GPU", "warn", detail, FIX_ORT_GPU, "ort"))
    model = tiny_onnx_model()
    for provider in available:
        if provider in NOT_COMPUTE:
            continue
        if provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider") and not gpu:
            detail = "listed, not tried: no CUDA GPU"
            checks.append(
                Check(
                    "Backends", f"onnxruntime {provider}", "info", detail, None, f"ort:{provider}"
                )
            )
            continue
        why = try_provider(ort, model, provider)
        if why is None:
            status, detail, fix = "ok", "a tiny session ran on it", None
        else:
            status, detail = "warn", why
            fix = PROVIDER_FIX.get(provider)  # others (OpenVINO, DirectML, ...): optional
            if provider == "CPUExecutionProvider":
                status, fix = "fail", FIX_REINSTALL
        checks.append(
            Check("Backends", f"onnxruntime {provider}", status, detail, fix, f"ort:{provider}")
        )
    return checks


# --- TensorRT and OpenVINO ---------------------------------------------------------------------


def probe_tensorrt(gpu: bool) -> list[Check]:
    """Import TensorRT and create a builder and an empty network on the GPU."""
    if not installed("tensorrt"):
        if gpu:
            detail = "not installed: the fastest backend on NVIDIA GPUs"
            return [Check("Backends", "tensorrt", "warn", detail, FIX_TENSORRT, "tensorrt")]
        return [
            Check(
                "Backends",
                "tensorrt",
                "info",
                "not installed (needs an NVIDIA GPU)",
                None,
                "tensorrt",
            )
        ]
    try:
        import tensorrt as trt
    except Exception as exc:
        why = f"installed but does not import: {first_line(exc)}"
        return [Check("Backends", "tensorrt", "warn", why, FIX_TENSORRT, "tensorrt")]
    if not gpu:
        return [
            Check(
                "Backends",
                "tensorrt",
                "info",
                f"{trt.__version__} (no CUDA GPU to build on)",
                None,
                "tensorrt",
            )
        ]
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        builder.create_network(0)
        detail = f"{trt.__version__}: a builder and network were created"
        if getattr(builder, "platform_has_fast_fp16", False):
            detail += " (fast fp16)"
    except Exception as exc:
        why = f"{trt.__version__}: the builder failed: {first_line(exc)}"
        return [Check("Backends", "tensorrt", "warn", why, FIX_TENSORRT, "tensorrt")]
    return [Check("Backends", "tensorrt", "ok", detail, None, "tensorrt")]


def probe_openvino() -> list[Check]:
    """OpenVINO's version and the devices its plugins find, when it is installed."""
    if not installed("openvino"):
        return []
    import openvino as ov

    core = ov.Core()
    names = []
    for device in core.available_devices:
        try:
            names.append(f"{device} ({core.get_property(device, 'FULL_DEVICE_NAME')})")
        except Exception:
            names.append(device)
    detail = f"{ov.get_version().split('-')[0]}: devices {', '.join(names) or 'none'}"
    return [Check("Backends", "openvino", "ok" if names else "warn", detail, None, "openvino")]


def _ort_version() -> str:
    found = [f"{version_of(d)} ({d})" for d in ("onnxruntime", "onnxruntime-gpu") if version_of(d)]
    return " + ".join(found) or "-"


def versions_line() -> str:
    """Versions of the libraries that decide what runs where."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    parts = [
        f"torch {torch.__version__}",
        f"CUDA {torch.version.cuda or 'none (CPU build)'}",
        f"cuDNN {cudnn or '-'}",
        f"NVIDIA driver {nvidia_driver_version() or '-'}",
        f"TensorRT {version_of('tensorrt', 'tensorrt-cu12', 'tensorrt-cu13') or '-'}",
        f"ONNX Runtime {_ort_version()}",
        f"OpenVINO {version_of('openvino') or '-'}",
    ]
    return ", ".join(parts)
