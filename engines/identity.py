"""Machine identity and library versions: what cached artifacts, measurements and remembered
failures are keyed by (an optimized ONNX Runtime model depends on the CPU's instruction set, a
TensorRT engine on the GPU and TensorRT version)."""

from __future__ import annotations


def cpu_name() -> str:
    """The CPU model (ONNX Runtime's optimized models depend on its instruction set)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
