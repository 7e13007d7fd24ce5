"""Evidence that an fp16 row of ``benchmarks.gpu_check`` really ran half-precision kernels, so
a build that silently runs fp32 (e.g. a weakly typed TensorRT network running the casts as fp32
layers) cannot pass for fp16: the profiler's CUDA kernel names for torch, the profiled node
types for ONNX Runtime (see :func:`engines.onnxruntime_providers.half_nodes`)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# cuDNN / cuBLAS / CUTLASS kernel names of half-precision math: "..._f16f16_f16f32_...",
# "volta_h884gemm", "ampere_h16816gemm", "implicit_convolve_hhgemm", "...tensorop_f16_s16816...".
_HALF = re.compile(r"f16|fp16|h884|h1688|h16816|hhgemm|half", re.IGNORECASE)


def half_kernels(names: list[str]) -> list[str]:
    """The kernel names among ``names`` that compute in half precision."""
    return [name for name in names if _HALF.search(name) and "bf16" not in name.lower()]


def summary(total: int, half: list[str], what: str) -> dict[str, Any]:
    """A row's evidence: counts, a few names, and whether any half kernel ran."""
    return {
        "what": what,
        "total": total,
        "half": len(half),
        "examples": sorted(set(half))[:3],
        "ran_fp16": bool(half),
    }


def torch_evidence(engine: Any, driving: np.ndarray) -> dict[str, Any] | None:
    """Profile one frame call of a CUDA torch engine; None elsewhere (no CUDA kernels)."""
    if engine.backend != "torch" or not str(engine.device).startswith("cuda"):
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.animate(driving)
        torch.cuda.synchronize()
    names = [
        event.name
        for event in prof.events()
        if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA
    ]
    return summary(len(names), half_kernels(names), "CUDA kernels of one frame call")


def evidence(engine: Any, driving: np.ndarray) -> dict[str, Any] | None:
    """The fp16 evidence of ``engine`` (None when its backend has none here)."""
    recorded = getattr(engine, "fp16_evidence", None)
    if recorded is not None:
        return recorded
    return torch_evidence(engine, driving)
