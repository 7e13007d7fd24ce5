"""The outputs of a run, set up from :class:`~live.options.RunOptions`: the file output with
its audio and Content Credentials, the virtual camera and the preview window, and what is said
about them when the run ends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from export.errors import UserError

from .audio import AudioPlan, plan_audio
from .credentials import ContentCredentials
from .errors import DisplayError, InputError
from .options import RunOptions
from .outputs import FrameSink, open_output
from .preview import PreviewWindow, display_available
from .sources import FrameSource
from .startup import Checks
from .virtualcam import CameraFactory, VirtualCamera

log = logging.getLogger("avatarcam")


def open_sinks(
    options: RunOptions, source: FrameSource | None, checks: Checks, stack: ExitStack
) -> list[FrameSink]:
    """The file output, if any; a problem when a file input would go nowhere."""
    output = options.output
    source_fps = source.fps if source is not None else None
    sinks: list[FrameSink] = []
    if output.file is not None:
        sink = checks.enter(
            stack,
            lambda: open_output(
                output.file,
                output.video_fps or source_fps or 25.0,
                overwrite=output.overwrite,
                size=output.video_size,
                # live and paced runs record on the capture clock: they play in real time
                timed=options.capture.timing != "offline",
            ),
        )
        sinks = [sink] if sink is not None else []
    if (
        source is not None
        and not source.is_live
        and output.file is None
        and not output.virtual_camera
        and output.preview is not True
        and options.ui is None
    ):
        checks.problems.append(
            InputError(
                f"Nothing to do with the file input {source.name}: pass --output (a folder "
                "or a video file), --virtual-cam, --preview or --ui."
            )
        )
    return sinks


def audio_plan(options: RunOptions, source: FrameSource | None, live: bool) -> AudioPlan | None:
    """The driving video's audio for the video output (see live.audio)."""
    output = options.output
    if source is None:
        return None
    return plan_audio(
        options.capture.input,
        output.file,
        live=live,
        keep=output.audio,
        paced=options.capture.timing == "paced",
        output_fps=output.video_fps,
        input_fps=source.fps,
    )


def content_credentials(options: RunOptions, avatars: list[Path]) -> ContentCredentials | None:
    """Content Credentials for file outputs (None without one)."""
    if options.output.file is None:
        return None
    return ContentCredentials(options.marking, avatars)


def sign_on_close(
    credentials: ContentCredentials | None, sinks: list[FrameSink]
) -> Callable[..., bool]:
    """An exit callback that signs each file output that received frames, once it is closed:
    after a complete run, and after Ctrl+C or an error that left a usable partial output."""

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> bool:
        if credentials is None:
            return False
        for sink in sinks:
            if not sink.count:
                continue
            try:
                credentials.sign_output(sink.path, sink.count)
            except UserError as exc:
                if exc_type is None:
                    raise
                log.warning("could not sign %s: %s", sink.path, exc)
        return False

    return on_exit


def open_virtual_camera(
    options: RunOptions,
    source: FrameSource | None,
    camera_factory: CameraFactory | None,
    checks: Checks,
    stack: ExitStack,
) -> VirtualCamera | None:
    if not options.output.virtual_camera:
        return None
    source_fps = source.fps if source is not None else None
    return checks.enter(
        stack,
        lambda: VirtualCamera(
            options.output.camera, source_fps=source_fps, camera_factory=camera_factory
        ),
    )


def open_preview(
    options: RunOptions, required: bool, checks: Checks, stack: ExitStack
) -> PreviewWindow | None:
    """The preview window; without a display a problem when it was asked for a camera
    (``required``), else a warning."""
    if not options.output.preview:
        return None
    if display_available():
        return stack.enter_context(PreviewWindow(check_display=False))
    if required:
        checks.problems.append(
            DisplayError(
                "--preview was given but there is no display to show the window on "
                "(DISPLAY/WAYLAND_DISPLAY unset or unusable). Run on a desktop session, "
                "or drop --preview."
            )
        )
    else:
        log.warning(
            "no display found: running without the preview window "
            "(pass --no-preview to silence this)"
        )
    return None


def report_interrupt(sinks: list[FrameSink]) -> Callable[..., bool]:
    """An exit callback that, after Ctrl+C, says what the file outputs hold (an output
    without a frame is removed when it closes)."""

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            for sink in sinks:
                if sink.count:
                    log.warning("interrupted: %d frames saved to %s", sink.count, sink.path)
                else:
                    log.warning(
                        "interrupted before the first frame: nothing saved to %s", sink.path
                    )
        return False

    return on_exit


def log_virtual_camera(virtual_camera: VirtualCamera, options: RunOptions) -> None:
    log.info(
        "virtual camera: %s (%dx%d at %g fps) - select it in Zoom, OBS, Meet or Teams",
        virtual_camera.device,
        options.output.camera.width,
        options.output.camera.height,
        virtual_camera.fps,
    )
