"""Sets up a run from :class:`~live.options.RunOptions`: input, avatars, engine, outputs, loop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from engines import Engine, create_engine
from engines.int8_switch import create_for_run
from export.config import ModelConfig, load_config
from export.model_choice import choose_model
from export.obtain import obtain_checkpoint

from .animator import Animator
from .audio import AudioPlan, audio_on_close
from .avatars import load_avatar_images
from .calibration import calibration_source
from .controls import controls_help
from .errors import InputError, SettingError
from .face import FaceDetector
from .grabber import LatestFrameGrabber
from .loop import FrameRecord, LiveLoop
from .marking import FrameMarker
from .options import RunOptions
from .output_lock import OutputLock, remove_leftovers
from .outputs import FrameSink, check_output_target
from .pipeline import Cropper, FaceCropper, ResizeCropper, prepare_avatars
from .progress import Progress
from .run_outputs import (
    audio_plan,
    content_credentials,
    log_virtual_camera,
    open_preview,
    open_sinks,
    open_virtual_camera,
    report_interrupt,
    sign_on_close,
)
from .sources import FrameSource, open_source
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
    remote = options.engine.server is not None  # --server: the model lives on the server
    if not remote and options.model.config is not None:  # check an explicit config first
        load_config(options.model.config, options.model.resolution)
    capture = options.capture
    asked_preview = options.output.preview
    with ExitStack() as stack:
        if options.output.file is not None:
            # One run per output: locked before it is checked, so the check cannot race.
            stack.enter_context(OutputLock(options.output.file))
            remove_leftovers(options.output.file)
            check_output_target(
                options.output.file, _input_paths(options), options.output.overwrite
            )
        stack.enter_context(_terminate_as_interrupt())
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
        avatars = checks.run(lambda: load_avatar_images(options.avatar))
        # Once input and avatars are fine, the checkpoint is checked against its config, before
        # anything else is set up or said: its problem is then the one message.
        model = None
        if not remote and not checks.problems:
            model = checks.run(lambda: _model(options))
            checks.raise_all()
        # Content Credentials are set up before any output opens (a bad key fails first), and
        # sign what the outputs hold once they are closed (pushed first, the callback runs
        # after the outputs' own exits).
        credentials = checks.run(
            lambda: content_credentials(options, [a.path for a in avatars or []])
        )
        sinks: list[FrameSink] = []
        stack.push(sign_on_close(credentials, sinks))
        # The input's audio goes into a video output once it is closed, before it is signed
        # (planned once the start-up checks pass).
        audio: list[AudioPlan] = []
        stack.push(audio_on_close(audio, sinks))
        sinks += open_sinks(options, source, checks, stack)
        virtual_camera = open_virtual_camera(options, source, camera_factory, checks, stack)
        preview = open_preview(options, asked_preview is True and live, checks, stack)
        checks.raise_all()
        audio += [plan for plan in [audio_plan(options, source, live)] if plan is not None]
        stack.push(report_interrupt(sinks))
        assert source is not None and avatars is not None  # checks.raise_all() raised otherwise
        if live:
            _log_camera(source)
        if virtual_camera is not None:
            log_virtual_camera(virtual_camera, options)

        if remote:
            engine = stack.enter_context(_connect_server(options, live))
            prepared = prepare_avatars(avatars, engine.io.resolution, options.crop, options.framing)
        else:
            assert model is not None  # checks.raise_all() raised otherwise
            checkpoint, config = model
            # Avatars are framed before the engine starts: an int8 build calibrates on them and
            # on the first input frames, framed the way the loop frames them.
            prepared = prepare_avatars(avatars, config.resolution, options.crop, options.framing)
            calibration = calibration_source(
                capture.input, source, prepared, config.resolution, options.crop, options.framing
            )
            # --precision auto on a camera: fp32 serves while int8 is prepared (never waits).
            engine = stack.enter_context(
                create_for_run(checkpoint, config, options.engine, calibration, live, create_engine)
            )
        log.debug("engine details: %s", engine.describe())
        resolution = engine.io.resolution
        cropper = _cropper(options, resolution, stack)
        if live:
            log.info(controls_help() if preview else "press Ctrl+C to stop")

        timing = options.capture.timing or "offline"  # resolved: never None here
        progress = _progress(source)

        def record(frame: FrameRecord, loop: LiveLoop) -> None:
            if progress is not None:
                progress.update()
            if on_frame is not None:
                on_frame(frame, loop)

        if not options.marking.watermark:
            log.warning(
                "warning: the invisible watermark is off (--no-watermark). Where the law "
                "requires AI-generated video to be marked as such (e.g. EU AI Act Art. 50), "
                "disclosing it is now up to you: consider --label."
            )
        loop = LiveLoop(
            LatestFrameGrabber(source, timing),
            cropper,
            Animator(engine, options.motion),
            prepared,
            options.loop,
            sinks=sinks,
            virtual_camera=virtual_camera,
            preview=preview,
            on_frame=record,
            marker=FrameMarker(options.marking, resolution, engine_marks=engine.marks_frames),
        )
        if options.ui is not None:
            stack.enter_context(_serve_ui(options, loop, engine, source, virtual_camera))
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
    report = RunReport(expected=None)  # counts only: nothing is kept per frame

    def count(record: FrameRecord, loop: LiveLoop) -> None:
        if not loop.grabber.source.is_live:
            report.count(record.status if options.crop else "")

    loop = run(options, on_frame=count)
    source = loop.grabber.source
    if source.is_live:
        return loop
    every_frame = loop.grabber.mode == "offline"  # not paced: nothing dropped on purpose
    report.expected = source.frame_count if every_frame else None
    report.finish(str(options.capture.input), live=False)
    return loop


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a service manager, a closed terminal): handled like Ctrl+C, so the
    outputs are closed and saved (a video renamed into place) before the process ends."""


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a run lasts, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread
    (other threads cannot install handlers: then nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, _frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(number).name}")

    names = ("SIGTERM", "SIGHUP")
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# The set-up steps of run(), in order. Options passed in are resolved (no automatic values).


def _looks_like_camera(spec: str) -> bool:
    text = str(spec).strip()
    return text.isdigit() or text.startswith("/dev/video")


def _input_paths(options: RunOptions) -> list[Path]:
    """The avatar and driving input as paths (a camera index or device is not one)."""
    paths = [Path(options.avatar).expanduser()]
    if not _looks_like_camera(options.capture.input):
        paths.append(Path(str(options.capture.input)).expanduser())
    return paths


def _log_camera(source: FrameSource) -> None:
    size = source.size or (0, 0)
    log.info(
        "camera %s: %dx%d at %s fps",
        source.name,
        size[0],
        size[1],
        f"{source.fps:g}" if source.fps else "unknown",
    )


def _model(options: RunOptions) -> tuple[Path, ModelConfig]:
    """The local model: the checkpoint found, downloaded or named, and its config, checked
    against each other before any engine is built."""
    model = options.model
    choice = obtain_checkpoint(
        model.checkpoint,
        model.config,
        download=model.download,
        url=model.checkpoint_url,
        sha256=model.checkpoint_sha256,
        allow_insecure_catalog=model.allow_insecure_catalog,
    )
    # No --config: the catalog entry's config, else the checkpoint's own (beside it or in it).
    spec = model.config if model.config is not None else (choice.config if choice.entry else None)
    checked = choose_model(choice.checkpoint, spec, model.resolution)
    log.log(logging.INFO if checked.own else logging.DEBUG, "model config: %s", checked.source)
    return checked.checkpoint, checked.config


def _connect_server(options: RunOptions, live: bool) -> Engine:
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


def _cropper(options: RunOptions, resolution: int, stack: ExitStack) -> Cropper:
    if not options.crop:
        return ResizeCropper(resolution)
    detector = stack.enter_context(FaceDetector("video"))
    return FaceCropper(resolution, detector, options.framing)


def _serve_ui(
    options: RunOptions,
    loop: LiveLoop,
    engine: Engine,
    source: FrameSource,
    virtual_camera: VirtualCamera | None,
) -> AbstractContextManager[object]:
    """The control page (--ui) for this run's loop."""
    from .ui import load_server
    from .ui.api import RunInfo

    server = load_server()
    vcam = options.output.camera
    size = source.size
    avatar = Path(options.avatar).expanduser()
    info = RunInfo(
        engine={
            "backend": str(engine.backend),
            "precision": str(engine.precision),
            "device": str(engine.device),
        },
        camera={
            "name": source.name,
            "size": list(size) if size else None,
            "fps": source.fps,
            "live": source.is_live,
        },
        virtual_camera=None
        if virtual_camera is None
        else {"device": virtual_camera.device, "size": [vcam.width, vcam.height]},
        avatar_folder=avatar if avatar.is_dir() else None,
        resolution=engine.io.resolution,
        crop=options.crop,
        framing=options.framing,
        marking=options.marking,
        engine_marks=engine.marks_frames,
    )
    assert options.ui is not None
    return server.serve_ui(options.ui, loop, info, (vcam.width, vcam.height), vcam.fit)


def _progress(source: FrameSource) -> Progress | None:
    """A progress bar for file inputs longer than a few frames."""
    total = source.frame_count
    if source.is_live or (total is not None and total <= PROGRESS_MIN_FRAMES):
        return None
    return Progress(total)
