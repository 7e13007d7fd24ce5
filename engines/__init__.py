"""Inference backends behind one interface (:class:`engines.base.Engine`).

Backends: ``torch`` (eager PyTorch, CPU or CUDA), ``onnxruntime`` (the exported graphs; TensorRT,
CUDA or CPU execution providers), ``openvino`` (CPU, Intel GPU or NPU; the only int8 backend)
and ``tensorrt`` (TensorRT engines on NVIDIA GPUs); ``auto``
picks the fastest that works here (see :mod:`engines.select`). Importing this package needs
neither onnxruntime nor tensorrt: backends import them when they start.
"""

from __future__ import annotations

from pathlib import Path

from export.config import ModelConfig

from .base import Engine, FrameResult, KeypointArrays
from .calibration import CalibrationFrames, CalibrationSource
from .errors import EngineError, EngineUsageError, EngineWarning
from .options import BACKENDS, PRECISIONS, EngineOptions

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "CalibrationFrames",
    "Engine",
    "EngineError",
    "EngineOptions",
    "EngineUsageError",
    "EngineWarning",
    "FrameResult",
    "KeypointArrays",
    "create_engine",
]


def create_engine(
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions | None = None,
    calibration: CalibrationSource | None = None,
) -> Engine:
    """Start the engine ``options`` ask for (default: ``--backend auto``), for ``checkpoint``
    at ``config.resolution`` and ``options.batch``.

    Exported ONNX files and built engines are cached (see :mod:`engines.cache`), so only the
    first start of a model exports or builds. ``engine.selection_reason`` says which backend
    runs and why. Raises :class:`EngineError` listing every backend tried, with the reason and
    fix for each, when none can start.

    ``calibration`` (:class:`CalibrationFrames`, or a callable returning them, called only if
    needed) is what ``--precision int8`` calibrates on the first time it runs for a model.
    """
    from .select import create

    return create(checkpoint, config, options or EngineOptions(), calibration)
