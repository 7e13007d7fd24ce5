"""Sets up a run from :class:`~live.options.RunOptions`: input, avatars, engine, outputs, loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

from engines import create_engine
from export.checkpoint import find_default_checkpoint
from export.config import load_config

from .animator import Animator
from .avatars import load_avatar_images
from .controls import controls_help
from .errors import InputError, SettingError
from .face import FaceDetector
from .grabber import LatestFrameGrabber
from .loop import FrameRecord, LiveLoop
from .options import RunOptions
from .outputs import FrameSink, open_output
from .pipeline import Cropper, FaceCropper, ResizeCropper, prepare_avatars
from .preview import PreviewWindow, display_available
from .progress import Progress
from .sources import FrameSource, open_source
from .virtualcam import CameraFactory, VirtualCamera

log = logging.getLogger("avatarcam")

#: File inputs with more frames than this show progress.
PROGRESS_MIN_FRAMES = 10


def run(
    options: RunOptions,
    on_frame: Callable[[FrameRecord, LiveLoop], None] | None = None,
    camera_factory: CameraFactory | None = None,
) -> LiveLoop:
    """Run the whole pipeline until the input ends or the user quits; returns the loop.

    ``on_frame(record, loop)`` is called after each frame; ``camera_factory`` replaces
    pyvirtualcam (tests).
    """
    remote = options.engine.server is not None
    # With --server the model lives on the server: no local config or checkpoint.
    config = None if remote else load_config(options.model.config, options.model.resolution)
    capture = options.capture
    with ExitStack() as stack:
        source = stack.enter_context(
            open_source(capture.input, width=capture.width, height=capture.height, fps=capture.fps)
        )
        live = source.is_live
        options = options.resolved(live)
        if live:
            _log_camera(source)
        avatars = load_avatar_images(options.avatar)
        sinks = _open_sinks(options, source, stack)
        if remote:
            engine = stack.enter_context(_connect_server(options, live))
        else:
            checkpoint = options.model.checkpoint or find_default_checkpoint()
            engine = stack.enter_context(create_engine(checkpoint, config, options.engine))
        log.debug("engine details: %s", engine.describe())
        resolution = engine.io.resolution

        prepared = prepare_avatars(avatars, resolution, options.crop, options.framing)
        cropper = _cropper(options, resolution, stack)
        virtual_camera = _open_virtual_camera(options, source, camera_factory, stack)
        preview = _open_preview(options, stack)
        if live:
            log.info(controls_help() if preview else "press Ctrl+C to stop")

        realtime = options.capture.realtime
        mode = ("latest" if live else "paced") if realtime else "every"
        progress = _progress(source)

        def record(frame: FrameRecord, loop: LiveLoop) -> None:
            if progress is not None:
                progress.update()
            if on_frame is not None:
                on_frame(frame, loop)

        loop = LiveLoop(
            LatestFrameGrabber(source, mode),
            cropper,
            Animator(engine, options.motion),
            prepared,
            options.loop,
            sinks=sinks,
            media_fps=None if realtime else (source.fps or 25.0),
            virtual_camera=virtual_camera,
            preview=preview,
            on_frame=record,
        )
        written = loop.run()
        if progress is not None:
            progress.close()
    if written == 0:
        raise InputError(f"The input {capture.input} has no frames: nothing was written.")
    if options.output.file is not None:
        log.info("wrote %d frames to %s", written, options.output.file)
    if loop.dropped:
        log.info("dropped %d stale frames to keep up with the input", loop.dropped)
    return loop


# The set-up steps of run(), in order. Options passed in are resolved (no automatic values).


def _log_camera(source: FrameSource) -> None:
    size = source.size or (0, 0)
    log.info(
        "camera %s: %dx%d at %s fps",
        source.name,
        size[0],
        size[1],
        f"{source.fps:g}" if source.fps else "unknown",
    )


def _open_sinks(options: RunOptions, source: FrameSource, stack: ExitStack) -> list[FrameSink]:
    """The file output, if any; raises when a file input would go nowhere."""
    sinks = []
    if options.output.file is not None:
        sinks.append(stack.enter_context(open_output(options.output.file, source.fps or 25.0)))
    output = options.output
    if (
        not source.is_live
        and not sinks
        and not output.virtual_camera
        and output.preview is not True
    ):
        raise InputError(
            f"Nothing to do with the file input {source.name}: pass --output (a folder or a "
            "video file), --virtual-cam or --preview."
        )
    return sinks


def _cropper(options: RunOptions, resolution: int, stack: ExitStack) -> Cropper:
    if not options.crop:
        return ResizeCropper(resolution)
    detector = stack.enter_context(FaceDetector("video"))
    return FaceCropper(resolution, detector, options.framing)


def _open_virtual_camera(
    options: RunOptions,
    source: FrameSource,
    camera_factory: CameraFactory | None,
    stack: ExitStack,
) -> VirtualCamera | None:
    if not options.output.virtual_camera:
        return None
    virtual_camera = stack.enter_context(
        VirtualCamera(options.output.camera, source_fps=source.fps, camera_factory=camera_factory)
    )
    log.info(
        "virtual camera: %s (%dx%d at %g fps) - select it in Zoom, OBS, Meet or Teams",
        virtual_camera.device,
        options.output.camera.width,
        options.output.camera.height,
        virtual_camera.fps,
    )
    return virtual_camera


def _open_preview(options: RunOptions, stack: ExitStack) -> PreviewWindow | None:
    if not options.output.preview:
        return None
    if display_available():
        return stack.enter_context(PreviewWindow(check_display=False))
    log.warning(
        "no display found: running without the preview window (pass --no-preview to silence this)"
    )
    return None


def _progress(source: FrameSource) -> Progress | None:
    """A progress bar for file inputs longer than a few frames."""
    total = source.frame_count
    if source.is_live or (total is not None and total <= PROGRESS_MIN_FRAMES):
        return None
    return Progress(total)


def _connect_server(options: RunOptions, live: bool):
    """The remote backend (--server): a session on an avatar server; live runs reconnect with
    back-off when it goes, offline runs stop with what they wrote."""
    from engines.remote_engine import connect

    server = options.engine.server
    engine = connect(replace(server, reconnect=live))
    wanted = options.model.resolution
    if wanted is not None and wanted != engine.io.resolution:
        engine.close()
        raise SettingError(
            f"--resolution {wanted}, but the server at {server.url} runs "
            f"{engine.io.resolution}px: drop --resolution (the server decides)"
        )
    return engine
