"""Engine options, shared by the command line, the live loop and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch", "remote")
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
    server: RemoteOptions | None = None  # the avatar server of the remote backend


# --- the remote backend (an avatar server, engines/serve) ------------------------------------

TRANSPORTS = ("raw", "png", "jpeg")


@dataclass(frozen=True)
class RemoteOptions:
    """Where and how the remote backend sends frames."""

    url: str  # ws://HOST:PORT of an avatarcam server (python -m engines.serve)
    token: str | None = None  # the server's --token, if it has one
    transport: str = "png"  # frame encoding both ways: raw, png (lossless) or jpeg
    jpeg_quality: int = 90  # 1-100, for the jpeg transport
    reconnect: bool = False  # reconnect with back-off when the server goes (live runs)
    timeout_s: float = 10.0  # connect and reply timeout
