"""Engine options, shared by the command line, the live loop and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch", "remote")
PRECISIONS = ("auto", "fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineOptions:
    """How to run the network."""

    backend: str = "auto"  # torch, onnxruntime, openvino, tensorrt, or auto (fastest that works)
    # fp32, fp16, int8 (inside the graph; I/O stays float32) or auto: int8 on a CPU where it
    # passes its check on the run's frames, else fp32 (the command's default; from Python it
    # needs calibration frames, see engines.int8_auto)
    precision: str = "fp32"
    device: str = "auto"  # cpu, cuda[:N], gpu[.N]/npu (OpenVINO), or auto (CUDA when available)
    batch: int = 1  # frames per call
    cuda_graph: bool = False  # capture the frame call in a CUDA graph where supported
    compile: bool = False  # torch backend: torch.compile (inductor, CUDA graphs, static shapes)
    cache_dir: Path | None = None  # where built ONNX/TensorRT artifacts live (None: user cache)
    recalibrate_int8: bool = False  # int8: calibrate again even when a calibrated model is cached
    remeasure: bool = False  # auto: measure again (backend race, compile or not), retry failures
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
    source_address: str | None = None  # local address to connect from; None: the system's
