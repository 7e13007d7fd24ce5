"""One explicit way to open an ONNX Runtime session: each provider set is tried by this
module, with its options, and verified; nothing is left to the Python wrapper's fallback.

The wrapper (``onnxruntime.InferenceSession``) retries a failed creation once with
``[CUDA, CPU]`` or ``[CPU]`` and *without the provider options* (``use_tf32`` and ``device_id``
back to their defaults), and a failed run with the fallback providers. So here:

- a set with the TensorRT EP imports ``tensorrt`` first (the pip wheel's ``libnvinfer.so.10``
  is found only once the package has loaded it);
- sessions are created with ``enable_fallback=0`` and ``disable_fallback()`` is called on them
  (the run-time fallback);
- every session is verified (:func:`engines.onnxruntime_providers.verify_session`): each
  requested GPU provider active, with the options asked for;
- a set that fails gives way to the next one with its reason reported, and the failure is
  remembered (:class:`engines.failures.FailureMemory`, per machine and library versions) so
  the next start does not spend time on it again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import MissingDependencyError

from .errors import EngineError, EngineWarning
from .failures import FailureMemory
from .onnxruntime_providers import TENSORRT_EP, Providers, verify_session


@dataclass(frozen=True)
class Opened:
    """A verified session and what it took."""

    session: Any  # the onnxruntime InferenceSession
    providers: Providers  # the provider set it runs with
    notes: tuple[str, ...]  # why earlier sets were not used, and smaller differences


def set_label(providers: Providers) -> str:
    return " + ".join(name for name, _ in providers)


def load_tensorrt_libraries() -> None:
    """Import tensorrt, which loads libnvinfer for ONNX Runtime's TensorRT EP."""
    from .tensorrt_engine import import_tensorrt

    import_tensorrt()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def open_session(
    ort: Any,
    model: Path,
    attempts: Sequence[Providers],
    make_options: Callable[[], Any],
    device: str,
    what: str,
    memory: FailureMemory | None = None,
    load_tensorrt: Callable[[], None] = load_tensorrt_libraries,
) -> Opened:
    """The first provider set of ``attempts`` that opens ``model`` as asked, verified.

    ``make_options`` makes fresh SessionOptions per try. Raises EngineError naming every set
    and why it failed when none does.
    """
    from .onnxruntime_engine import create_session

    reasons: list[str] = []
    for providers in attempts:
        label = set_label(providers)
        remembered = memory.recall(f"{model.name}: {label}") if memory is not None else None
        if remembered is not None:
            reasons.append(f"{label} skipped: {remembered}")
            continue
        try:
            if TENSORRT_EP in (name for name, _ in providers):
                load_tensorrt()
            session = create_session(ort, model, providers, make_options())
            disable = getattr(session, "disable_fallback", None)
            if disable is not None:
                disable()
            notes = verify_session(session, providers, device, what)
        except (EngineError, MissingDependencyError) as exc:
            reason = _first_line(exc)
            reasons.append(f"{label} failed: {reason}")
            if memory is not None:
                memory.remember(f"{model.name}: {label}", reason)
            continue
        for reason in reasons:
            warnings.warn(f"{what}: {reason}; using {label}", EngineWarning, stacklevel=2)
        return Opened(session, providers, (*(f"{what}: {r}" for r in reasons), *notes))
    raise EngineError(
        f"ONNX Runtime could not open {what} with any provider set: " + "; ".join(reasons)
    )
