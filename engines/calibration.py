"""Calibration frames for ``--precision int8``: what the quantizer measures activations on.

int8 scales are only as good as the frames they were measured on, so they come from the
user's own run: the avatar photo(s) and the first frames of the driving input or camera,
framed exactly as the live loop frames them (:mod:`live.calibration` collects them). They are
needed once, when the quantized model is built; a cached model needs none, so callers pass a
zero-argument callable and frames are only captured when calibration actually runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import EngineError


@dataclass(frozen=True)
class CalibrationFrames:
    """Model-sized frames, as the live loop hands them to the engine."""

    avatars: tuple[np.ndarray, ...]  # each R x R x 3 uint8, framed like the live loop's avatars
    driving: tuple[np.ndarray, ...]  # each R x R x 3 uint8, the first framed driving crops
    description: str = ""  # where they came from, for the log line

    def __post_init__(self) -> None:
        if not self.avatars or not self.driving:
            raise EngineError(
                "int8 calibration needs at least one avatar and one driving frame with a face; "
                f"got {len(self.avatars)} avatar(s) and {len(self.driving)} driving frame(s). "
                "Use a driving input in which a face is visible, or --precision fp32."
            )

    def check(self, resolution: int) -> None:
        """Raise EngineError unless every frame is ``resolution`` x ``resolution`` x 3 uint8."""
        for kind, frames in (("avatar", self.avatars), ("driving", self.driving)):
            for i, frame in enumerate(frames):
                if frame.shape != (resolution, resolution, 3) or frame.dtype != np.uint8:
                    raise TypeError(
                        f"calibration {kind} frame {i} is {frame.shape} {frame.dtype}; expected "
                        f"({resolution}, {resolution}, 3) uint8"
                    )


#: What :func:`engines.create_engine` takes: the frames, or a callable that captures them.
CalibrationSource = CalibrationFrames | Callable[[], CalibrationFrames]


def resolve(source: CalibrationSource | None) -> CalibrationFrames | None:
    """The frames of ``source`` (calling it if it is a callable)."""
    if source is None or isinstance(source, CalibrationFrames):
        return source
    frames = source()
    if not isinstance(frames, CalibrationFrames):
        raise TypeError(f"the calibration callable returned {type(frames).__name__}")
    return frames


def to_nchw(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """R x R x 3 uint8 -> 1 x 3 x R x R float32 in [0, 1], as engines take them."""
    return [
        np.ascontiguousarray(f.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
        for f in frames
    ]
