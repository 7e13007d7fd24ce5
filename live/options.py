"""The options of one run, as frozen dataclasses, and their automatic defaults.

The command line (:mod:`live.cli`) maps its flags onto :class:`RunOptions`; :func:`live.app.run`
and the pipeline benchmark take a :class:`RunOptions` directly. Options left as ``None`` mean
"decide from the input": :meth:`RunOptions.resolved` turns them into plain values once the input
is known to be a camera (live) or a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from engines.options import EngineOptions

from .animator import MotionOptions
from .framing import FramingConfig
from .loop import LoopOptions
from .marking import MarkingOptions
from .timing import TimingMode
from .ui.options import UiOptions
from .virtualcam import VirtualCameraConfig


@dataclass(frozen=True)
class ModelOptions:
    """Which network to run."""

    checkpoint: Path | None = None  # FOMM checkpoint file or catalog name; None: look/download
    config: str | None = None  # preset or FOMM YAML; None: the checkpoint's (else vox-256)
    resolution: int | None = None  # square frame size; None: the config's (256 for presets)
    download: bool = False  # download a missing checkpoint without asking
    checkpoint_url: str | None = None  # download the checkpoint from this URL ...
    checkpoint_sha256: str | None = None  # ... verified against this sha256 (required with it)
    allow_insecure_catalog: bool = False  # accept a $AVATARCAM_CATALOG fetched over http://


@dataclass(frozen=True)
class CaptureOptions:
    """What to capture from."""

    input: str = "0"  # camera index or device, video file, GIF or folder of images
    width: int | None = None  # camera width to request; None: the camera's default
    height: int | None = None  # camera height to request
    fps: float | None = None  # camera rate to request
    timing: TimingMode | None = None  # live.timing: live, paced or offline; None: from input


@dataclass(frozen=True)
class OutputOptions:
    """Where animated frames go."""

    file: Path | None = None  # folder of PNGs or a video file to record to
    virtual_camera: bool | None = None  # None: on for camera inputs, off for files
    camera: VirtualCameraConfig = field(default_factory=VirtualCameraConfig)  # its size/fps
    preview: bool | None = None  # None: on when a display is available and input is a camera
    overwrite: bool = False  # replace what an earlier run wrote to ``file``
    video_fps: float | None = None  # frame rate of a video ``file``; None: the input's rate
    video_size: tuple[int, int] | None = None  # video/PNG frame size; None: the model's
    audio: bool = True  # carry a driving video's audio into a video ``file`` (live.audio)


@dataclass(frozen=True)
class RunOptions:
    """Everything one run of the command needs."""

    avatar: Path  # avatar image or folder of images
    capture: CaptureOptions = field(default_factory=CaptureOptions)  # input
    output: OutputOptions = field(default_factory=OutputOptions)  # outputs
    crop: bool = True  # frame the face automatically; False: resize the whole frame
    framing: FramingConfig = field(default_factory=FramingConfig)  # crop size and smoothing
    model: ModelOptions = field(default_factory=ModelOptions)  # network and weights
    engine: EngineOptions = field(default_factory=EngineOptions)  # backend and precision
    motion: MotionOptions = field(default_factory=MotionOptions)  # relative/absolute motion
    loop: LoopOptions = field(default_factory=LoopOptions)  # mirror, best frame, fallback
    marking: MarkingOptions = field(default_factory=MarkingOptions)  # watermark, label, C2PA
    ui: UiOptions | None = None  # the control page in the browser (--ui); None: none

    def resolved(self, live: bool) -> RunOptions:
        """These options with every automatic (``None``) choice made for a camera input
        (``live``) or a file input: virtual camera and preview on for cameras only, the timing
        mode (:mod:`live.timing`): ``live`` for cameras, the asked mode (else ``offline``) for
        files."""
        timing = "live" if live else self.capture.timing or "offline"
        if timing == "live" and not live:
            timing = "paced"  # a file asked to behave like a camera is played at its rate
        virtual_camera = self.output.virtual_camera
        preview = self.output.preview
        return replace(
            self,
            capture=replace(self.capture, timing=timing),
            output=replace(
                self.output,
                virtual_camera=live if virtual_camera is None else virtual_camera,
                preview=live if preview is None else preview,
            ),
        )
