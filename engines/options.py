"""Engine options, shared by the command line, the live loop and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class EngineOptions:
    """How to run the network."""

    backend: str = "auto"  # torch, onnxruntime, tensorrt, or auto (the fastest that works here)
    precision: str = "fp32"  # fp32 or fp16 (inside the graph; inputs and outputs stay float32)
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (CUDA when available)
    batch: int = 1  # frames per call
    cuda_graph: bool = False  # capture the frame call in a CUDA graph where supported
    compile: bool = False  # torch backend: torch.compile (inductor, CUDA graphs, static shapes)
    cache_dir: Path | None = None  # where built ONNX/TensorRT artifacts live (None: user cache)
