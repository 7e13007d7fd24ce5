"""Offline runs: a video file, GIF or folder of frames in, a folder of PNGs or a video out."""

from __future__ import annotations

import logging

from engines import create_engine
from export.checkpoint import find_default_checkpoint
from export.config import load_config

from .animator import Animator
from .avatars import load_avatar_images
from .capture import open_source
from .cli import RunOptions
from .errors import InputError
from .outputs import open_output
from .pipeline import ResizeCropper, process_stream, resize_square
from .progress import Progress

log = logging.getLogger("avatarcam")

#: Inputs with more frames than this show progress.
PROGRESS_MIN_FRAMES = 10


def run_offline(options: RunOptions) -> int:
    """Animate every frame of a file input; returns the number of frames written."""
    if options.output is None:
        raise InputError(
            f"--output is required for the file input {options.input}: pass a folder (one PNG "
            "per frame) or a video file such as out.mp4."
        )
    config = load_config(options.model.config, options.model.resolution)
    with open_source(options.input) as source:
        if source.is_live:
            raise InputError(
                f"{source.name} is a camera; offline runs take a video file, a GIF or a folder."
            )
        avatars = load_avatar_images(options.avatar)
        sink = open_output(options.output, fps=source.fps or 25.0)
        checkpoint = options.model.checkpoint or find_default_checkpoint()
        with create_engine(checkpoint, config, options.engine) as engine, sink:
            log.info("engine: %s", engine.describe())
            animator = Animator(engine, options.motion)
            size = config.resolution
            animator.set_avatar(resize_square(avatars[0].image, size))
            cropper = ResizeCropper(size)
            total = source.frame_count
            progress = Progress(total) if total is None or total > PROGRESS_MIN_FRAMES else None
            written = process_stream(source, cropper, animator, [sink], progress)
            if progress is not None:
                progress.close()
    if written == 0:
        raise InputError(f"The input {options.input} has no frames: nothing was written.")
    log.info("wrote %d frames to %s", written, options.output)
    return written
