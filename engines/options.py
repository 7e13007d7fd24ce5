"""Engine options, shared by the command line, the live loop and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineOptions:
    """How to run the network."""

    backend: str = "auto"  # torch, onnxruntime, openvino, tensorrt, or auto (fastest that works)
    precision: str = "fp32"  # fp32, fp16 or int8 (inside the graph; I/O stays float32)
    device: str = "auto"  # cpu, cuda[:N], gpu[.N]/npu (OpenVINO), or auto (CUDA when available)
    batch: int = 1  # frames per call
    cuda_graph: bool = False  # capture the frame call in a CUDA graph where supported
    cache_dir: Path | None = None  # where built ONNX/TensorRT artifacts live (None: user cache)
    recalibrate_int8: bool = False  # int8: calibrate again even when a calibrated model is cached
