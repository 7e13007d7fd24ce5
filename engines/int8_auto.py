"""``--precision auto``, the command's default: int8 on a CPU wherever it passes its check on
this checkpoint and face, fp32 everywhere else.

- On a CPU with OpenVINO and NNCF installed (``--backend auto`` or ``openvino``), the frame
  graph is quantized on the run's own frames and checked against fp32 on frames held out of
  calibration (:mod:`engines.int8_verify`). It runs int8 when the check passes; otherwise fp32
  runs (the usual measured backend choice) and the start-up line says why, with the figures.
- The quantized model and its verdict are cached together (:mod:`engines.int8`): later starts
  decide at once. ``--recalibrate-int8`` redoes both.
- Elsewhere (a CUDA GPU, an Intel GPU/NPU, ``--backend torch``/``onnxruntime``/``tensorrt``)
  auto is the backend's own default, fp32, and the line says so.

:mod:`engines.int8_switch` runs the same decision in the background for a live camera.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from export.config import ModelConfig
from export.errors import CheckpointError, ConfigError

from .base import Engine
from .cache import CacheDirError
from .calibration import CalibrationSource
from .int8_verify import Int8Rejected
from .options import EngineOptions

log = logging.getLogger(__name__)


def say(message: str) -> None:
    """A start-up line on stderr (as the int8 calibration lines)."""
    print(f"avatarcam: {message}", file=sys.stderr, flush=True)


def int8_unavailable(options: EngineOptions) -> str | None:
    """Why ``--precision auto`` cannot use int8 with these options (None: it can try)."""
    from .select import _cuda_available, _installed

    if options.backend not in ("auto", "openvino"):
        return f"int8 runs in the openvino backend; --backend {options.backend} runs fp32"
    if options.device == "auto" and _cuda_available():
        return "a CUDA GPU runs its default, fp32"
    if options.device not in ("auto", "cpu"):
        return f"--device {options.device} runs its default, fp32 (int8 auto is for CPUs)"
    for module in ("openvino", "nncf"):
        if not _installed(module):
            return f"{module} is not installed (pip install 'avatarcam[cpu]' for int8)"
    return None


def int8_options(options: EngineOptions) -> EngineOptions:
    return replace(options, precision="int8", backend="openvino", device="cpu")


def start_verified_int8(
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None,
) -> Engine:
    """The openvino int8 engine if its (cached or now measured) check passes; raises
    :class:`Int8Rejected` with the verdict, or EngineError when it cannot be built."""
    from .select import _start

    return _start(
        "openvino",
        "cpu",
        checkpoint,
        config,
        int8_options(options),
        calibration,
        require_verified=True,
    )


def int8_taken(engine: Engine) -> str:
    """The start-up line of an int8 engine picked by auto."""
    verdict = getattr(engine, "int8_verdict", None)
    figures = verdict.line() if verdict is not None else "check not recorded"
    return f"precision auto: int8, verified against fp32 on this checkpoint and face: {figures}"


def start_fp32(
    create: Callable[..., Engine],
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None,
    why: str,
) -> Engine:
    """The fp32 engine ``create`` picks, with ``why`` int8 is not used in its reason."""
    engine = create(checkpoint, config, replace(options, precision="fp32"), calibration)
    line = f"precision auto: fp32, because {why}"
    engine.selection_reason = f"{line}; {engine.selection_reason}"
    say(line)
    return engine


def create_auto(
    create: Callable[..., Engine],
    checkpoint: str | Path,
    config: ModelConfig,
    options: EngineOptions,
    calibration: CalibrationSource | None,
) -> Engine:
    """``--precision auto`` (``create`` is :func:`engines.select.create`)."""
    why = int8_unavailable(options)
    if why is None:
        try:
            engine = start_verified_int8(checkpoint, config, options, calibration)
        except Int8Rejected as exc:
            why = f"int8 failed its check on this checkpoint and face: {exc.verdict.line()}"
        except (CheckpointError, ConfigError, CacheDirError):
            raise  # the input or the cache folder is wrong: fp32 cannot fix it either
        except Exception as exc:  # reported on the start-up line; fp32 runs
            log.debug("int8 for precision auto failed", exc_info=True)
            text = str(exc).strip().splitlines()
            why = f"int8 could not be prepared ({text[0] if text else type(exc).__name__})"
        else:
            line = int8_taken(engine)
            engine.selection_reason = f"openvino on cpu (int8), {line}"
            say(line)
            log.info("engine: %s", engine.selection_reason)
            return engine
    return start_fp32(create, checkpoint, config, options, calibration, why)
