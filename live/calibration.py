"""int8 calibration frames from the user's own run: the framed avatars and the first driving
frames, cropped exactly as the live loop crops them (:class:`~live.pipeline.FaceCropper` or
:class:`~live.pipeline.ResizeCropper` with the run's framing settings).

:func:`calibration_source` returns a callable for :func:`engines.create_engine`: it is only
called when an int8 model has to be (re)built, so a cached model costs no capture at all.
A file input is read from the start in a second reader (the run itself still starts at frame
0); a camera is read directly before the loop starts (those frames are live anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import numpy as np

from engines.calibration import CalibrationFrames
from live.face import FaceDetector
from live.framing import FramingConfig
from live.pipeline import FaceCropper, PreparedAvatar, ResizeCropper
from live.sources import FrameSource, open_source

log = logging.getLogger("avatarcam")

#: Driving frames used (the first ones with a face); more adds calibration time, not accuracy.
DRIVING_FRAMES = 24
#: Frames read at most while looking for those (a camera may start without a face in view).
MAX_READ = 120


def driving_crops(
    source: FrameSource,
    resolution: int,
    crop: bool,
    framing: FramingConfig,
    count: int = DRIVING_FRAMES,
    max_read: int = MAX_READ,
) -> list[np.ndarray]:
    """The first ``count`` model-sized crops of ``source`` (frames without a face skipped)."""
    crops: list[np.ndarray] = []
    with ExitStack() as stack:
        if crop:
            detector = stack.enter_context(FaceDetector("video"))
            cropper: Callable = FaceCropper(resolution, detector, framing)
        else:
            cropper = ResizeCropper(resolution)
        for _ in range(max_read):
            frame = source.read()
            if frame is None:
                break
            # Each crop gets a buffer of its own: calibration keeps them all (not per frame).
            out = np.empty((resolution, resolution, 3), np.uint8)
            result = cropper(frame.image, frame.timestamp, out)
            if result.image is not None:
                crops.append(result.image)
            if len(crops) >= count:
                break
    return crops


def calibration_source(
    input_spec: str,
    live_source: FrameSource,
    avatars: Sequence[PreparedAvatar],
    resolution: int,
    crop: bool,
    framing: FramingConfig,
) -> Callable[[], CalibrationFrames]:
    """A callable that collects :class:`CalibrationFrames` for this run when called."""

    def collect() -> CalibrationFrames:
        start = time.monotonic()
        if live_source.is_live:
            crops = driving_crops(live_source, resolution, crop, framing)
        else:
            with open_source(input_spec) as source:
                crops = driving_crops(source, resolution, crop, framing)
        log.info(
            "int8 calibration frames: %d avatar(s) and the first %d framed frames of %s "
            "(collected in %.1f s)",
            len(avatars),
            len(crops),
            live_source.name,
            time.monotonic() - start,
        )
        return CalibrationFrames(
            tuple(a.image for a in avatars),
            tuple(crops),
            f"{len(avatars)} avatar(s), first {len(crops)} frames of {live_source.name}",
        )

    return collect
