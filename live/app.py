"""Sets up a run from :class:`~live.cli.RunOptions`: input, avatars, engine, outputs, loop."""

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
from .calibration import calibration_source
from .capture import LatestFrameGrabber, open_source
from .cli import RunOptions
from .controls import controls_help
from .errors import InputError
from .face import FaceDetector
from .loop import FrameRecord, LiveLoop
from .outputs import open_output
from .pipeline import FaceCropper, ResizeCropper, prepare_avatars
from .preview import PreviewWindow, display_available
from .progress import Progress
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
    config = load_config(options.model.config, options.model.resolution)
    capture = options.capture
    with ExitStack() as stack:
        source = stack.enter_context(
            open_source(capture.input, width=capture.width, height=capture.height, fps=capture.fps)
        )
        live = source.is_live
        if source.is_live:
            size = source.size or (0, 0)
            log.info(
                "camera %s: %dx%d at %s fps",
                source.name,
                size[0],
                size[1],
                f"{source.fps:g}" if source.fps else "unknown",
            )
        avatars = load_avatar_images(options.avatar)
        sinks = []
        if options.output.file is not None:
            sinks.append(stack.enter_context(open_output(options.output.file, source.fps or 25.0)))
        want_vcam = options.output.virtual_camera
        if want_vcam is None:
            want_vcam = live
        if not live and not sinks and not want_vcam and options.output.preview is not True:
            raise InputError(
                f"Nothing to do with the file input {source.name}: pass --output (a folder or a "
                "video file), --virtual-cam or --preview."
            )
        checkpoint = options.model.checkpoint or find_default_checkpoint()
        prepared = prepare_avatars(avatars, config.resolution, options.crop, options.framing)
        calibration = calibration_source(
            capture.input, source, prepared, config.resolution, options.crop, options.framing
        )
        engine = stack.enter_context(
            create_engine(checkpoint, config, options.engine, calibration=calibration)
        )
        log.debug("engine details: %s", engine.describe())

        if options.crop:
            detector = stack.enter_context(FaceDetector("video"))
            cropper = FaceCropper(config.resolution, detector, options.framing)
        else:
            cropper = ResizeCropper(config.resolution)

        virtual_camera = None
        if want_vcam:
            virtual_camera = stack.enter_context(
                VirtualCamera(
                    options.output.camera, source_fps=source.fps, camera_factory=camera_factory
                )
            )
            log.info(
                "virtual camera: %s (%dx%d at %g fps) - select it in Zoom, OBS, Meet or Teams",
                virtual_camera.device,
                options.output.camera.width,
                options.output.camera.height,
                virtual_camera.fps,
            )
        preview = None
        want_preview = options.output.preview
        if want_preview is None:
            want_preview = live
        if want_preview:
            if display_available():
                preview = stack.enter_context(PreviewWindow(check_display=False))
            else:
                log.warning(
                    "no display found: running without the preview window "
                    "(pass --no-preview to silence this)"
                )
        if live:
            log.info(controls_help() if preview else "press Ctrl+C to stop")

        realtime = capture.realtime if capture.realtime is not None else live
        mode = ("latest" if live else "paced") if realtime else "every"
        grabber = LatestFrameGrabber(source, mode)
        total = source.frame_count
        progress = None
        if not live and (total is None or total > PROGRESS_MIN_FRAMES):
            progress = Progress(total)

        def record(frame: FrameRecord, loop: LiveLoop) -> None:
            if progress is not None:
                progress.update()
            if on_frame is not None:
                on_frame(frame, loop)

        loop = LiveLoop(
            grabber,
            cropper,
            Animator(engine, options.motion),
            prepared,
            replace(options.loop, lossless=not realtime),
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
