"""Sets up a run from :class:`~live.options.RunOptions`: input, avatars, engine, outputs, loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from engines import create_engine
from export.config import load_config
from export.obtain import obtain_checkpoint

from .animator import Animator
from .avatars import load_avatar_images
from .capture import LatestFrameGrabber, open_source
from .controls import controls_help
from .errors import DisplayError, InputError
from .face import FaceDetector
from .loop import FrameRecord, LiveLoop
from .options import RunOptions
from .outputs import check_output_target, open_output
from .pipeline import FaceCropper, ResizeCropper, prepare_avatars
from .preview import PreviewWindow, display_available
from .progress import Progress
from .startup import Checks, RunReport
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
    pyvirtualcam (tests). :func:`run_checked` also checks the result.
    """
    if options.model.config is not None:  # an explicit config: check it before anything else
        load_config(options.model.config, options.model.resolution)
    capture = options.capture
    output = options.output
    if output.file is not None:
        check_output_target(output.file, _input_paths(options), output.overwrite)
    with ExitStack() as stack:
        # Start-up checks, all problems reported at once, before the slow engine build.
        checks = Checks()
        source = checks.enter(
            stack,
            lambda: open_source(
                capture.input, width=capture.width, height=capture.height, fps=capture.fps
            ),
        )
        live = source.is_live if source is not None else _looks_like_camera(capture.input)
        options = options.resolved(live)
        source_fps = source.fps if source is not None else None
        avatars = checks.run(lambda: load_avatar_images(options.avatar))
        sinks = []
        if options.output.file is not None:
            sink = checks.enter(
                stack,
                lambda: open_output(
                    options.output.file,
                    options.output.video_fps or source_fps or 25.0,
                    overwrite=options.output.overwrite,
                    size=options.output.video_size,
                ),
            )
            sinks = [sink] if sink is not None else []
        want_vcam = options.output.virtual_camera
        if (
            source is not None
            and not live
            and options.output.file is None
            and not want_vcam
            and options.output.preview is not True
        ):
            checks.problems.append(
                InputError(
                    f"Nothing to do with the file input {source.name}: pass --output (a folder "
                    "or a video file), --virtual-cam or --preview."
                )
            )
        virtual_camera = None
        if want_vcam:
            virtual_camera = checks.enter(
                stack,
                lambda: VirtualCamera(
                    options.output.camera, source_fps=source_fps, camera_factory=camera_factory
                ),
            )
        preview = None
        if options.output.preview:
            if display_available():
                preview = stack.enter_context(PreviewWindow(check_display=False))
            elif output.preview is True and live:  # asked for, for a camera: a real problem
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
        checks.raise_all()
        stack.push(_report_interrupt(sinks))
        assert source is not None and avatars is not None
        if source.is_live:
            size = source.size or (0, 0)
            log.info(
                "camera %s: %dx%d at %s fps",
                source.name,
                size[0],
                size[1],
                f"{source.fps:g}" if source.fps else "unknown",
            )
        if virtual_camera is not None:
            log.info(
                "virtual camera: %s (%dx%d at %g fps) - select it in Zoom, OBS, Meet or Teams",
                virtual_camera.device,
                options.output.camera.width,
                options.output.camera.height,
                virtual_camera.fps,
            )

        model = options.model
        choice = obtain_checkpoint(
            model.checkpoint,
            model.config,
            download=model.download,
            url=model.checkpoint_url,
            sha256=model.checkpoint_sha256,
        )
        config = load_config(choice.config, model.resolution)
        engine = stack.enter_context(create_engine(choice.checkpoint, config, options.engine))
        log.debug("engine details: %s", engine.describe())

        prepared = prepare_avatars(avatars, config.resolution, options.crop, options.framing)
        if options.crop:
            detector = stack.enter_context(FaceDetector("video"))
            cropper = FaceCropper(config.resolution, detector, options.framing)
        else:
            cropper = ResizeCropper(config.resolution)

        if live:
            log.info(controls_help() if preview else "press Ctrl+C to stop")

        realtime = options.capture.realtime
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
            options.loop,
            sinks=sinks,
            media_fps=None if realtime else (source.fps or 25.0),
            virtual_camera=virtual_camera,
            preview=preview,
            on_frame=record,
        )
        try:
            written = loop.run()
        except BaseException:
            if progress is not None:
                progress.abort()
            raise
        if progress is not None:
            progress.close()
    if written == 0:
        raise InputError(f"The input {capture.input} has no frames: nothing was written.")
    if options.output.file is not None:
        log.info("wrote %d frames to %s", written, options.output.file)
    if loop.dropped:
        log.info("dropped %d stale frames to keep up with the input", loop.dropped)
    return loop


def run_checked(options: RunOptions) -> LiveLoop:
    """:func:`run`, then a check of the result: a file input that ended before the frame count
    it announces, or in which no frame had a face, raises :class:`~live.startup.IncompleteRun`
    (exit status 4) once the output is saved; some frames without a face give a warning."""
    counts: list[str] = []
    loop = run(options, on_frame=lambda record, _: counts.append(record.status))
    source = loop.grabber.source
    if source.is_live:
        return loop
    every_frame = loop.grabber.mode == "every"  # not paced: nothing dropped on purpose
    report = RunReport(expected=source.frame_count if every_frame else None)
    for status in counts:
        report.count(status if options.crop else "")
    report.finish(str(options.capture.input), live=False)
    return loop


def _looks_like_camera(spec: str) -> bool:
    text = str(spec).strip()
    return text.isdigit() or text.startswith("/dev/video")


def _input_paths(options: RunOptions) -> list[Path]:
    """The avatar and driving input as paths (a camera index or device is not one)."""
    paths = [Path(options.avatar).expanduser()]
    if not _looks_like_camera(options.capture.input):
        paths.append(Path(str(options.capture.input)).expanduser())
    return paths


def _report_interrupt(sinks: list) -> Callable[..., bool]:
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
