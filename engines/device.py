"""Devices: the ``--device`` text parsed once into a :class:`Device`, and the one place that
asks whether CUDA is usable here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import EngineError

_DEVICE_HELP = (
    "expected cpu, cuda, cuda:N, gpu, gpu.N, npu or auto (gpu and npu are Intel devices run by "
    "OpenVINO; NVIDIA GPUs are cuda)"
)


def cuda_available() -> bool:
    """Whether PyTorch sees a usable CUDA GPU (False when torch has no CUDA or no driver)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def cuda_device_count() -> int:
    """How many CUDA GPUs PyTorch sees (0 without CUDA)."""
    if not cuda_available():
        return 0
    import torch

    return int(torch.cuda.device_count())


@dataclass(frozen=True)
class Device:
    """Where an engine runs: the CPU, one CUDA GPU, or an Intel GPU or NPU (OpenVINO)."""

    kind: str  # "cpu", "cuda", or "gpu"/"npu" (Intel devices, driven by OpenVINO only)
    index: int | None = None  # device ordinal; None for the CPU and for plain "cuda"/"gpu"

    @classmethod
    def parse(cls, text: str) -> Device:
        """``cpu``, ``cuda`` or ``cuda:N`` (not ``auto``: see :func:`resolve`)."""
        if isinstance(text, Device):
            return text
        if text == "cpu":
            return cls("cpu")
        if text == "cuda":
            return cls("cuda")
        if text.startswith("cuda:") and text[5:].isdigit():
            return cls("cuda", int(text[5:]))
        lowered = text.strip().lower()
        if lowered in ("gpu", "npu"):
            return cls(lowered)
        if lowered.startswith("gpu.") and lowered[4:].isdigit():
            return cls("gpu", int(lowered[4:]))
        raise EngineError(f"unknown device '{text}': {_DEVICE_HELP}")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def ordinal(self) -> int:
        """The CUDA device number (0 for plain ``cuda``); 0 for the CPU."""
        return self.index or 0

    @property
    def is_intel(self) -> bool:
        """An Intel GPU or NPU: only the openvino backend drives it."""
        return self.kind in ("gpu", "npu")

    def __str__(self) -> str:
        separator = "." if self.is_intel else ":"
        return self.kind if self.index is None else f"{self.kind}{separator}{self.index}"


def check_device(text: str) -> None:
    """Raise EngineError unless ``text`` is a valid --device value (``auto`` included)."""
    if text != "auto":
        Device.parse(text)


def resolve(text: str) -> Device:
    """``auto`` -> CUDA when a GPU is usable, else the CPU; an explicit CUDA device must exist."""
    if text == "auto":
        return Device("cuda") if cuda_available() else Device("cpu")
    device = Device.parse(text)
    if device.is_cuda:
        if not cuda_available():
            import torch

            raise EngineError(
                f"--device {text} was requested but PyTorch sees no CUDA GPU (torch "
                f"{torch.__version__}). Install a CUDA build of PyTorch and an NVIDIA driver, or "
                "use --device cpu."
            )
        count = cuda_device_count()
        if device.ordinal >= count:
            raise EngineError(
                f"--device {text}: no such GPU (PyTorch sees {count}); use cuda or "
                f"cuda:0 .. cuda:{count - 1}"
            )
    return device


def pinned_zeros(shape: tuple[int, ...]) -> tuple[Any, Any] | None:
    """A zeroed float32 host array in page-locked memory and the torch tensor that owns it
    (keep it alive as long as the array), or None when no CUDA is usable here."""
    if not cuda_available():
        return None
    import torch

    tensor = torch.zeros(shape, dtype=torch.float32, pin_memory=True)
    return tensor.numpy(), tensor
