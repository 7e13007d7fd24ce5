"""What ``benchmarks.gpu_check`` can know before trying: whether the CUDA device is usable, and
why a variant cannot load here (a missing package or provider), in the exact words of a row."""

from __future__ import annotations

import importlib.util
import warnings

from . import contract
from .contract import Variant


def cuda_problem(device: str) -> str | None:
    """Why ``device`` (cuda or cuda:N) cannot be used here, in one line; None when it can."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    if not available:
        if torch.version.cuda is None:
            why = f"PyTorch {torch.__version__} is a CPU-only build"
        elif caught:
            why = str(caught[0].message).strip().splitlines()[0]
        else:
            why = f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
        return (
            f"{why}; run it on a machine with an NVIDIA GPU, its driver and a CUDA build of PyTorch"
        )
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= count:
        return f"--device {device}: PyTorch sees {count} GPU(s); use cuda:0 .. cuda:{count - 1}"
    return None


NO_TENSORRT = "no TensorRT"
NO_ORT_GPU = "no onnxruntime-gpu"


def skip_reason(variant: Variant, device: str) -> tuple[str, str | None] | None:
    """(why, fix) when ``variant`` cannot load here, known before trying (missing package or
    provider); None when it may. A machine without TensorRT or onnxruntime-gpu gets exactly
    "no TensorRT" / "no onnxruntime-gpu"."""
    from engines.select import precheck

    if variant.compiled and not contract.compile_supported():
        return (
            f"this build has no compiled torch mode (EngineOptions.{contract.COMPILE_FIELD})",
            None,
        )
    tensorrt_gpu = variant.backend == "tensorrt" and device.startswith("cuda")
    if tensorrt_gpu and importlib.util.find_spec("tensorrt") is None:
        return NO_TENSORRT, "pip install 'avatarcam[gpu]' (tensorrt-cu12 10.x)"
    attempt = precheck(variant.backend, device, variant.precision)
    if attempt is not None:
        return attempt.reason, attempt.fix
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if variant.backend != "torch" and missing:
        return (
            f"exporting to ONNX needs {' and '.join(missing)}, not installed here",
            f"pip install {' '.join(missing)}",
        )
    if variant.backend == "onnxruntime" and device.startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return NO_ORT_GPU, (
                "pip uninstall -y onnxruntime && pip install 'avatarcam[gpu]' (the installed "
                "onnxruntime is the CPU-only wheel)"
            )
    return None
