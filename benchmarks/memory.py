"""Peak memory of one benchmark row: host resident memory and, where CUDA, device memory.

Host: on Linux the kernel's resident high-water mark (VmHWM) is reset before each row by
writing 5 to /proc/self/clear_refs, so each row reports the peak of the process while that row
ran. Elsewhere only ``resource.getrusage``'s ``ru_maxrss`` exists, a high-water mark since the
process started that never goes down; the results say which method was used.
Device: ``torch.cuda.max_memory_allocated``, which sees PyTorch's allocations only (not ONNX
Runtime's or TensorRT's), so it is reported for torch rows only.
"""

from __future__ import annotations

import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

METHOD_VMHWM = "VmHWM reset per row (/proc/self/clear_refs)"
METHOD_MAXRSS = "ru_maxrss: high-water mark since process start"


def _vmhwm_kib() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class HostPeak:
    """Peak resident memory of this process over a stretch of code."""

    def __init__(self) -> None:
        self.method = METHOD_MAXRSS  # how the peak is measured (see the module docstring)

    def reset(self) -> None:
        """Start a new stretch (a no-op where the high-water mark cannot be reset)."""
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.method = METHOD_MAXRSS
            return
        self.method = METHOD_VMHWM if _vmhwm_kib() is not None else METHOD_MAXRSS

    def peak_mb(self) -> float | None:
        """The peak resident memory in MiB since :meth:`reset` (see :attr:`method`)."""
        if self.method == METHOD_VMHWM:
            kib = _vmhwm_kib()
            if kib is not None:
                return kib / 1024
        try:
            import resource
        except ImportError:
            return None
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def reset_device_peak(device: str) -> None:
    """Reset PyTorch's peak allocation counter of a CUDA device (no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def device_peak_mb(device: str) -> float | None:
    """PyTorch's peak allocation on a CUDA device since the last reset, in MiB; None on CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / (1024 * 1024)
