"""The command users run (``run_live.py`` / ``avatarcam``): options, and how they map onto the
configuration dataclasses. This module is the one place where flags meet configuration."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engines.options import BACKENDS, PRECISIONS, EngineOptions
from export.errors import UserError

from .animator import MotionOptions

log = logging.getLogger("avatarcam")


@dataclass(frozen=True)
class ModelOptions:
    """Which network to run."""

    checkpoint: Path | None = None  # FOMM checkpoint; None: look in the default folders
    config: str = "vox-256"  # preset name or an original FOMM YAML file
    resolution: int | None = None  # square frame size; None: the config's (256 for presets)


@dataclass(frozen=True)
class RunOptions:
    """Everything one run of the command needs."""

    avatar: Path  # avatar image (or folder of images)
    input: str = "0"  # camera index or device, video file, GIF or folder of images
    output: Path | None = None  # folder of PNGs or a video file to record to
    crop: bool = True  # frame the face automatically; False: resize the whole frame
    model: ModelOptions = field(default_factory=ModelOptions)  # network and weights
    engine: EngineOptions = field(default_factory=EngineOptions)  # backend and precision
    motion: MotionOptions = field(default_factory=MotionOptions)  # relative/absolute motion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_live.py",
        description=(
            "Animate an avatar photo with the motion of a face: from a video file, a GIF or a "
            "folder of frames to a folder of PNGs or a video file."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--avatar", type=Path, required=True, help="avatar image")
    io.add_argument(
        "--input",
        default="0",
        help="driving input: a video file, a GIF or a folder of images (sorted by name)",
    )
    io.add_argument(
        "--output",
        type=Path,
        help="a folder (one PNG per frame: 000000.png, ...) or a video file (.mp4, .avi)",
    )
    io.add_argument(
        "--no-crop",
        dest="crop",
        action="store_false",
        help="do not frame the face: resize whole frames to the model resolution",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        type=Path,
        help="FOMM checkpoint, e.g. vox-adv-cpk.pth.tar (default: looked for in ./checkpoints "
        "and ~/.cache/avatarcam/checkpoints)",
    )
    model.add_argument(
        "--config",
        default=ModelOptions.config,
        help="preset (vox-256, vox-adv-256, taichi-256, mgif-256, ...) or an original FOMM "
        "YAML config (default: %(default)s)",
    )
    model.add_argument("--resolution", type=int, help="model frame size (default: 256)")

    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--backend",
        choices=BACKENDS,
        default=EngineOptions.backend,
        help="inference backend (default: %(default)s, the fastest that works here)",
    )
    engine.add_argument("--precision", choices=PRECISIONS, default=EngineOptions.precision)
    engine.add_argument(
        "--device", default=EngineOptions.device, help="cpu, cuda, cuda:N or auto (default)"
    )

    motion = parser.add_argument_group("motion")
    mode = motion.add_mutually_exclusive_group()
    mode.add_argument(
        "--relative",
        dest="relative",
        action="store_true",
        default=True,
        help="motion relative to the reference frame (default)",
    )
    mode.add_argument(
        "--absolute", dest="relative", action="store_false", help="absolute keypoint positions"
    )
    scale = motion.add_mutually_exclusive_group()
    scale.add_argument(
        "--adapt-scale",
        dest="adapt_scale",
        action="store_true",
        default=True,
        help="scale motion by the avatar/reference face size ratio (default)",
    )
    scale.add_argument("--no-adapt-scale", dest="adapt_scale", action="store_false")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    return parser


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Map parsed flags onto :class:`RunOptions`."""
    return RunOptions(
        avatar=args.avatar,
        input=args.input,
        output=args.output,
        crop=args.crop,
        model=ModelOptions(
            checkpoint=args.checkpoint, config=args.config, resolution=args.resolution
        ),
        engine=EngineOptions(backend=args.backend, precision=args.precision, device=args.device),
        motion=MotionOptions(relative=args.relative, adapt_scale=args.adapt_scale),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or the error's exit code)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        options = options_from_args(args)
        from .offline import run_offline

        run_offline(options)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
