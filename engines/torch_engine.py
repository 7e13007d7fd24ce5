"""The PyTorch backend: the exportable graphs run eagerly, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from export.graphs import AvatarGraph, FrameGraph
from export.iospec import GraphSpec, ModelIO, model_io
from export.model import FOMM

from .base import Engine
from .errors import EngineError


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
    return device


class TorchEngine(Engine):
    """Runs :class:`export.graphs.AvatarGraph` and :class:`~export.graphs.FrameGraph` in
    PyTorch. fp16 runs the network in half precision on CUDA; I/O stays float32."""

    backend = "torch"

    def __init__(
        self,
        model: FOMM,
        io: ModelIO | None = None,
        precision: str = "fp32",
        device: str = "cpu",
    ):
        device = resolve_device(device)
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"unknown precision '{precision}': expected fp32 or fp16")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EngineError(
                "the torch backend runs fp16 on CUDA only (half-precision convolutions are slow "
                "or unsupported on CPU); use --precision fp32 or a GPU"
            )
        io = io or model_io(model.config)
        super().__init__(io, precision, device)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._model = model.to(device=device, dtype=self._dtype).eval()
        self._graphs = {
            io.avatar.name: AvatarGraph(self._model, io),
            io.frame.name: FrameGraph(self._model, io),
        }

    def _to_device(self, name: str, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor.to(device=self.device, dtype=self._dtype, non_blocking=True)

    def _to_host(self, name: str, handle: torch.Tensor) -> np.ndarray:
        return handle.detach().to(device="cpu", dtype=torch.float32).numpy()

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        module = self._graphs[graph.name]
        with torch.inference_mode():
            outputs = module(*(feeds[name] for name in graph.input_names))
        return dict(zip(graph.output_names, outputs, strict=True))

    def _release(self) -> None:
        self._graphs.clear()
