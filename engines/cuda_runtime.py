"""The CUDA operations the TensorRT backend needs (device, streams, device and page-locked
buffers, CUDA-graph capture), through PyTorch. One small interface, so the backend's binding,
execution, capture and staging logic also runs against a CPU test double
(tests/engines/fake_tensorrt.py)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from .device import Device, cuda_available
from .errors import EngineError


class TorchCuda:
    """CUDA through PyTorch, on one device."""

    def __init__(self, device: Device):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device.ordinal)

    def name(self) -> str:
        return str(self.torch.cuda.get_device_name(self.device))

    def capability(self) -> str:
        return "sm_{}{}".format(*self.torch.cuda.get_device_capability(self.device))

    def on_device(self) -> AbstractContextManager[Any]:
        return self.torch.cuda.device(self.device)

    def new_stream(self) -> Any:
        return self.torch.cuda.Stream(device=self.device)

    def on_stream(self, stream: Any) -> AbstractContextManager[Any]:
        """Work in the block (kernels, copies, allocations) goes to ``stream``."""
        return self.torch.cuda.stream(stream)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A float32 device buffer, zero-filled on the current stream."""
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.device)

    def pinned(self, shape: tuple[int, ...]) -> Any:
        """A float32 page-locked host buffer."""
        return self.torch.zeros(shape, dtype=self.torch.float32, pin_memory=True)

    def new_graph(self) -> Any:
        return self.torch.cuda.CUDAGraph()

    def capture(self, graph: Any, stream: Any) -> AbstractContextManager[Any]:
        """Capture the work enqueued on ``stream`` in the block into ``graph``."""
        return self.torch.cuda.graph(graph, stream=stream)


def cuda_runtime(device: Device) -> TorchCuda:
    """The CUDA runtime for ``device``, or an EngineError saying what is missing."""
    if not cuda_available():
        import torch

        raise EngineError(
            "the tensorrt backend needs an NVIDIA GPU with a working driver and a CUDA build of "
            f"PyTorch; PyTorch {torch.__version__} sees no CUDA device. Use --backend "
            "onnxruntime (CPU) or install the NVIDIA driver and a CUDA build of PyTorch."
        )
    if not device.is_cuda:
        raise EngineError(f"the tensorrt backend runs on CUDA devices only, not '{device}'")
    return TorchCuda(device)
