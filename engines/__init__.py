"""Inference backends behind one interface (:class:`engines.base.Engine`)."""

from __future__ import annotations

from pathlib import Path

from export.config import ModelConfig

from .base import Engine, FrameResult, KeypointArrays
from .errors import EngineError
from .options import BACKENDS, PRECISIONS, EngineOptions

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Engine",
    "EngineError",
    "EngineOptions",
    "FrameResult",
    "KeypointArrays",
    "create_engine",
]


def create_engine(
    checkpoint: str | Path, config: ModelConfig, options: EngineOptions | None = None
) -> Engine:
    """Create the engine ``options`` ask for, for ``checkpoint`` at ``config.resolution``."""
    from export.checkpoint import load_model
    from export.iospec import model_io

    from .torch_engine import TorchEngine, resolve_device

    options = options or EngineOptions()
    if options.backend not in ("torch", "auto"):
        raise EngineError(f"backend '{options.backend}' is not available in this build")
    device = resolve_device(options.device)
    model = load_model(checkpoint, config)
    io = model_io(config, config.resolution, options.batch)
    return TorchEngine(model, io, options.precision, device)
