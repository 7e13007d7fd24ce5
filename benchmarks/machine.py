"""The machine and software a run was measured on, for the results file."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name, as the OS reports it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


#: Vector extensions that decide CPU inference speed (int8 most of all), as Linux names them in
#: /proc/cpuinfo: AVX2/FMA (every x86 CPU of the last decade), AVX-512 (f: foundation, bw/vl:
#: the int8/int16 forms), VNNI (int8 dot products: avx512_vnni, or avx_vnni on AVX2-only
#: cores), bf16 and AMX (tile matrix units of recent Xeons); asimddp/sve on ARM.
VECTOR_EXTENSIONS = (
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
)


def vector_extensions(cpuinfo: str | None = None) -> list[str]:
    """The CPU's extensions from :data:`VECTOR_EXTENSIONS` (``cpuinfo``: the text of
    /proc/cpuinfo; read here when None; an empty list where there is none)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break  # every core lists the same
    return [name for name in VECTOR_EXTENSIONS if name in flags]


def isa_class(extensions: list[str]) -> str:
    """The instruction-set class figures are quoted per: ``AVX-512 VNNI``, ``AVX-512``,
    ``AVX2 VNNI``, ``AVX2``, ``AMX`` (which implies AVX-512 VNNI) or ``other``."""
    have = set(extensions)
    if "amx_int8" in have:
        return "AMX"
    if "avx512_vnni" in have:
        return "AVX-512 VNNI"
    if "avx512f" in have:
        return "AVX-512"
    if "avx2" in have:
        return "AVX2 VNNI" if "avx_vnni" in have else "AVX2"
    return "other"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_info() -> dict[str, Any]:
    """CPU (model and vector extensions), cores, GPUs, OS and the load when the run started
    (other work skews timings)."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpus = _gpus()
    extensions = vector_extensions()
    return {
        "cpu": cpu_model(),
        "cpu_extensions": extensions,
        "isa_class": isa_class(extensions),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "gpu": gpus[0] if gpus else None,
        "os": platform.platform(),
        "hostname": platform.node(),
        "load_average_1m_at_start": round(load[0], 2) if load else None,
    }


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries that decide the speed (None: not installed)."""
    import numpy
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "onnxruntime": _dist_version("onnxruntime", "onnxruntime-gpu"),
        "onnxruntime_distribution": (
            "onnxruntime-gpu"
            if _dist_version("onnxruntime-gpu")
            else ("onnxruntime" if _dist_version("onnxruntime") else None)
        ),
        "tensorrt": _dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
        "openvino": _dist_version("openvino"),
        "nncf": _dist_version("nncf"),
        "onnx": _dist_version("onnx"),
        "numpy": numpy.__version__,
        "avatarcam": _dist_version("avatarcam"),
    }


def load_1m() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


class LoadProbe:
    """How contended the machine was while a row ran: the load average before and after, and
    the CPU seconds this process got per wall-clock second (about the number of busy threads
    when nothing else competes for the cores)."""

    def __init__(self) -> None:
        self._load = load_1m()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def result(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        return {
            "load_1m_start": self._load,
            "load_1m_end": load_1m(),
            "process_cpu_per_wall": round((time.process_time() - self._cpu) / wall, 2)
            if wall > 0
            else None,
        }
