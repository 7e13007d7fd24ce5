"""The timing mode of a run: one field that decides how frames flow from the input to the outputs.

Like MediaPipe Tasks' ``running_mode``, one value decides which calls happen:

- ``live``: a camera. Frames arrive in real time; each stage takes only the newest frame
  (stale ones are dropped), and recordings are written on the capture clock.
- ``paced``: a file played at its own rate as if it were a camera (``--pace realtime``): the
  same dropping and the same real-time recordings as ``live``, for trying a set-up with a
  recorded clip.
- ``offline``: a file processed frame by frame, as fast as possible; nothing is dropped and
  recordings hold exactly one output frame per input frame.

Every :class:`~live.sources.Frame` carries its capture time (``timestamp``, on the
``time.perf_counter`` clock, for latency) and its presentation time (``pts``, seconds since the
start of the stream, for the face tracker and the recordings).
"""

from __future__ import annotations

from typing import Literal

TimingMode = Literal["live", "paced", "offline"]
TIMING_MODES: tuple[TimingMode, ...] = ("live", "paced", "offline")
Pace = Literal["realtime", "every"]  # the command line's --pace for file inputs


def timing_mode(live: bool, pace: Pace | str | None) -> TimingMode:
    """The mode for a camera (``live``) or a file input with the asked ``pace``
    (None: files are processed frame by frame)."""
    if live:
        return "live"
    return "paced" if pace == "realtime" else "offline"


def drops_frames(mode: TimingMode) -> bool:
    """True when stages hand over only their newest frame (a slow stage drops stale ones)."""
    return mode != "offline"
