"""The PyTorch backend: the exportable graphs run eagerly, on CPU or CUDA.

fp16 (CUDA only) runs :func:`export.onnx_export.mixed_precision_model`, the same mixed
precision as the exported fp16 graphs: convolution stacks in half, keypoints and motion math in
float32, I/O float32. fp32 on CUDA disables TF32 convolutions while the engine runs (they would
cost about 1e-3 of accuracy). With ``cuda_graph`` the frame call is captured once in a CUDA
graph over static input/output buffers and replayed per frame. On the CPU the weights and 4-D
inputs are channels-last (oneDNN's native layout: no reorders around each convolution) and
the intra-op threads follow :func:`export.threads.inference_threads`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.config import ModelConfig
from export.graphs import AvatarGraph, FrameGraph
from export.iospec import GraphSpec, ModelIO, model_io
from export.model import FOMM
from export.threads import inference_threads

from .base import Engine
from .errors import EngineError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA GPU is usable, else 'cpu'; validates explicit choices."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(
            f"--device {device} was requested but PyTorch sees no CUDA GPU (torch "
            f"{torch.__version__}). Install a CUDA build of PyTorch and an NVIDIA driver, or "
            "use --device cpu."
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise EngineError(f"unknown device '{device}': expected cpu, cuda, cuda:N or auto")
    if device.startswith("cuda:"):
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise EngineError(
                f"--device {device}: no such GPU (PyTorch sees {torch.cuda.device_count()}); "
                "use cuda or cuda:0 .. cuda:N-1"
            )
    return device


@contextlib.contextmanager
def cudnn_settings(fp32: bool) -> Iterator[None]:
    """cuDNN autotuning on (static shapes), and no TF32 convolutions for fp32 engines; the
    process-wide flags are restored on exit."""
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.allow_tf32)
    cudnn.benchmark = True
    if fp32:
        cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = saved


class TorchEngine(Engine):
    """Runs :class:`export.graphs.AvatarGraph` and :class:`~export.graphs.FrameGraph` in
    PyTorch."""

    backend = "torch"

    def __init__(
        self,
        model: FOMM,
        io: ModelIO | None = None,
        precision: str = "fp32",
        device: str = "cpu",
        cuda_graph: bool = False,
    ):
        device = resolve_device(device)
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"unknown precision '{precision}': expected fp32 or fp16")
        on_cuda = device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise EngineError(
                "the torch backend runs fp16 on CUDA only (half-precision convolutions are slow "
                "or unsupported on CPU); use --precision fp32, a GPU, or --backend onnxruntime"
            )
        io = io or model_io(model.config)
        super().__init__(io, precision, device)
        self.cuda_graph = cuda_graph and on_cuda  # capture the frame call in a CUDA graph
        if cuda_graph and not on_cuda:
            log.info("cuda_graph ignored: the torch engine runs on the CPU")
        if precision == "fp16":
            from export.onnx_export import mixed_precision_model

            model = mixed_precision_model(model)
        self._model = model.to(device=device).eval()
        # CPU: oneDNN convolutions run in NHWC; channels-last weights and inputs avoid reorders.
        self._memory_format = torch.preserve_format if on_cuda else torch.channels_last
        if not on_cuda:
            self._model = self._model.to(memory_format=torch.channels_last)
            threads = inference_threads()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        self._graphs = {
            io.avatar.name: AvatarGraph(self._model, io),
            io.frame.name: FrameGraph(self._model, io),
        }
        # CUDA graph state: static inputs/outputs of the frame call and the captured graph.
        self._static: dict[str, torch.Tensor] = {}
        self._static_out: tuple[torch.Tensor, ...] = ()
        self._graph: Any = None
        if self.cuda_graph:
            self._static = {
                t.name: torch.zeros(t.shape, dtype=torch.float32, device=device)
                for t in io.frame.inputs
            }

    # --- backend hooks -------------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda_graph and not self._scratch and name in self._static:
            # The captured graph reads these addresses: update them in place.
            return self._static[name].copy_(tensor, non_blocking=False)
        tensor = tensor.to(device=self.device, dtype=torch.float32, non_blocking=True)
        if tensor.dim() == 4 and self._memory_format is torch.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _to_host(self, name: str, handle: torch.Tensor) -> np.ndarray:
        # Eager outputs are fresh tensors; static CUDA-graph outputs are copied by .to("cpu").
        host = handle.detach().to(device="cpu", dtype=torch.float32)
        return np.ascontiguousarray(host.numpy())  # NCHW, whatever the engine's layout

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        module = self._graphs[graph.name]
        on_cuda = self.device.startswith("cuda")
        settings = cudnn_settings(self.precision == "fp32") if on_cuda else contextlib.nullcontext()
        with settings:
            if self.cuda_graph and not self._scratch and graph.name == self.io.frame.name:
                outputs = self._replay(module, feeds)
            else:
                with torch.inference_mode():
                    outputs = module(*(feeds[name] for name in graph.input_names))
                if self.cuda_graph and not self._scratch and graph.name == self.io.avatar.name:
                    # The avatar state goes into the frame graph's static buffers.
                    with torch.no_grad():
                        for name, value in zip(graph.output_names, outputs, strict=True):
                            self._static[name].copy_(value)
                    outputs = tuple(self._static[name] for name in graph.output_names)
        return dict(zip(graph.output_names, outputs, strict=True))

    def _replay(self, module: torch.nn.Module, feeds: Mapping[str, Any]) -> tuple[Any, ...]:
        names = self.io.frame.input_names
        with torch.no_grad():
            for name in names:
                if feeds[name] is not self._static[name]:
                    self._static[name].copy_(feeds[name])
            if self._graph is None:
                self._capture(module)
            self._graph.replay()
        return self._static_out

    def _capture(self, module: torch.nn.Module) -> None:
        """Warm up on a side stream, then capture one frame call (PyTorch's recipe)."""
        inputs = [self._static[name] for name in self.io.frame.input_names]
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                module(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            self._static_out = tuple(module(*inputs))
        self._graph = graph
        log.info("captured the frame call in a CUDA graph")

    def _release(self) -> None:
        self._graphs.clear()
        self._graph = None
        self._static.clear()
        self._static_out = ()


def create_torch_engine(
    checkpoint: str | Path,
    config: ModelConfig,
    io: ModelIO,
    precision: str,
    device: str,
    cuda_graph: bool = False,
) -> TorchEngine:
    """Load the checkpoint and wrap it in a :class:`TorchEngine`."""
    from export.checkpoint import load_model

    device = resolve_device(device)
    if precision == "fp16" and not device.startswith("cuda"):
        raise EngineError("the torch backend runs fp16 on CUDA only; use --precision fp32 or a GPU")
    model = load_model(checkpoint, config)
    return TorchEngine(model, io, precision, device, cuda_graph)
