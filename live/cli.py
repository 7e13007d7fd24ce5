"""The command users run (``run_live.py`` / ``avatarcam``): its flags, and how they map onto
the configuration dataclasses. This module is the one place where flags meet configuration."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from engines.options import BACKENDS, PRECISIONS, EngineOptions
from export.errors import UserError

from .animator import MotionOptions
from .controls import controls_help
from .errors import SettingError
from .framing import FramingConfig
from .loop import LoopOptions
from .virtualcam import VirtualCameraConfig

log = logging.getLogger("avatarcam")


@dataclass(frozen=True)
class ModelOptions:
    """Which network to run."""

    checkpoint: Path | None = None  # FOMM checkpoint; None: look in the default folders
    config: str = "vox-256"  # preset name or an original FOMM YAML file
    resolution: int | None = None  # square frame size; None: the config's (256 for presets)


@dataclass(frozen=True)
class CaptureOptions:
    """What to capture from."""

    input: str = "0"  # camera index or device, video file, GIF or folder of images
    width: int | None = None  # camera width to request; None: the camera's default
    height: int | None = None  # camera height to request
    fps: float | None = None  # camera rate to request
    realtime: bool | None = None  # pace file inputs like a camera; None: cameras only


@dataclass(frozen=True)
class OutputOptions:
    """Where animated frames go."""

    file: Path | None = None  # folder of PNGs or a video file to record to
    virtual_camera: bool | None = None  # None: on for camera inputs, off for files
    camera: VirtualCameraConfig = field(default_factory=VirtualCameraConfig)  # its size/fps
    preview: bool | None = None  # None: on when a display is available and input is a camera


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


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}"
        ) from None
    return width, height


def _on_off(parser: argparse._ArgumentGroup, name: str, help_on: str, help_off: str) -> None:
    dest = name.replace("-", "_")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", dest=dest, action="store_true", default=None, help=help_on)
    group.add_argument(f"--no-{name}", dest=dest, action="store_false", help=help_off)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_live.py",
        description=(
            "Animate an avatar photo with your face. Live: webcam in, virtual camera out (pick "
            "'Avatarcam' as the camera in Zoom, OBS, Meet or Teams). Offline: a video file, GIF "
            "or folder of frames in, a folder of PNGs or a video file out."
        ),
        epilog=controls_help() + "\n\nExamples:\n"
        "  python run_live.py --avatar me.jpg                      # webcam 0 -> virtual camera\n"
        "  python run_live.py --avatar avatars/ --input 1 --no-virtual-cam   # preview only\n"
        "  python run_live.py --avatar me.jpg --input clip.mp4 --output out.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--avatar", type=Path, help="avatar image, or a folder of them (1-9 switch)")
    io.add_argument(
        "--input",
        default=CaptureOptions.input,
        help="camera index (default 0) or device (/dev/videoN), a video file, a GIF or a "
        "folder of images (sorted by name)",
    )
    io.add_argument(
        "--output",
        type=Path,
        help="record to a folder (one PNG per frame: 000000.png, ...) or a video file (.mp4)",
    )
    io.add_argument("--list-cameras", action="store_true", help="list cameras and exit")
    io.add_argument("--camera-size", type=_size, help="camera size to request, e.g. 1280x720")
    io.add_argument("--camera-fps", type=float, help="camera frame rate to request")
    _on_off(
        io,
        "realtime",
        "pace a file input like a camera, dropping frames the loop cannot keep up with",
        "process every frame (the default for files)",
    )

    vcam = parser.add_argument_group("virtual camera and preview")
    _on_off(
        vcam,
        "virtual-cam",
        "send frames to a virtual camera (default for camera inputs)",
        "no virtual camera (default for file inputs)",
    )
    defaults = VirtualCameraConfig()
    vcam.add_argument("--virtual-cam-device", help="virtual camera device, e.g. /dev/video10")
    vcam.add_argument(
        "--virtual-cam-size",
        type=_size,
        default=(defaults.width, defaults.height),
        help="virtual camera frame size (default 1280x720)",
    )
    vcam.add_argument("--virtual-cam-fps", type=float, help="default: the camera's rate")
    vcam.add_argument(
        "--virtual-cam-fit",
        choices=("letterbox", "crop"),
        default=defaults.fit,
        help="fit the square avatar with black bars (default) or fill and crop",
    )
    _on_off(
        vcam,
        "preview",
        "show the preview window (default when there is a display and a camera)",
        "no preview window",
    )

    framing = parser.add_argument_group("face framing")
    framing.add_argument(
        "--no-crop",
        dest="crop",
        action="store_false",
        help="do not frame the face: resize whole frames to the model resolution",
    )
    framing_defaults = FramingConfig()
    framing.add_argument(
        "--crop-scale",
        type=float,
        default=framing_defaults.scale,
        help="crop side / face size, 1-4 (default %(default)s)",
    )
    framing.add_argument(
        "--crop-shift",
        type=float,
        default=framing_defaults.vertical_shift,
        help="move the crop up by this many face heights (default %(default)s)",
    )
    framing.add_argument(
        "--smoothing",
        type=float,
        default=framing_defaults.min_cutoff,
        help="One Euro min cutoff in Hz: lower is steadier, higher follows faster "
        "(default %(default)s)",
    )
    framing.add_argument(
        "--mirror", action="store_true", help="mirror the camera image (selfie view)"
    )
    framing.add_argument(
        "--no-face",
        choices=("hold", "rest"),
        default=LoopOptions.no_face,
        help="without a face show the last frame (hold, default) or the avatar at rest",
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
    engine.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=EngineOptions.precision,
        help="precision inside the network (default: %(default)s); int8 (opt-in, OpenVINO): a "
        "quantized frame graph calibrated on your avatar and input on first use",
    )
    engine.add_argument(
        "--device",
        default=EngineOptions.device,
        help="cpu, cuda, cuda:N (NVIDIA), gpu, gpu.N or npu (Intel, with --backend openvino) "
        "or auto (default)",
    )
    engine.add_argument(
        "--cuda-graph", action="store_true", help="capture the frame call in a CUDA graph"
    )
    engine.add_argument(
        "--recalibrate-int8",
        action="store_true",
        help="with --precision int8: calibrate the quantized model again on this run's avatar "
        "and input (it is calibrated once per model and device, on first use, and cached)",
    )

    motion = parser.add_argument_group("motion and calibration")
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
    scale.add_argument(
        "--no-adapt-scale",
        dest="adapt_scale",
        action="store_false",
        help="apply the driving motion unscaled",
    )
    motion.add_argument(
        "--best-frame",
        action="store_true",
        help="calibrate on the frame whose pose best matches the avatar (key b)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    return parser


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Map parsed flags onto :class:`RunOptions` (raises SettingError on invalid values)."""
    if args.avatar is None:
        raise SettingError("--avatar is required: an image, or a folder of images.")
    width, height = args.camera_size or (None, None)
    vcam_width, vcam_height = args.virtual_cam_size
    return RunOptions(
        avatar=args.avatar,
        capture=CaptureOptions(
            input=args.input,
            width=width,
            height=height,
            fps=args.camera_fps,
            realtime=args.realtime,
        ),
        output=OutputOptions(
            file=args.output,
            virtual_camera=args.virtual_cam,
            camera=VirtualCameraConfig(
                width=vcam_width,
                height=vcam_height,
                fps=args.virtual_cam_fps,
                device=args.virtual_cam_device,
                fit=args.virtual_cam_fit,
            ),
            preview=args.preview,
        ),
        crop=args.crop,
        framing=replace(
            FramingConfig(),
            scale=args.crop_scale,
            vertical_shift=args.crop_shift,
            min_cutoff=args.smoothing,
        ),
        model=ModelOptions(
            checkpoint=args.checkpoint, config=args.config, resolution=args.resolution
        ),
        engine=EngineOptions(
            backend=args.backend,
            precision=args.precision,
            device=args.device,
            cuda_graph=args.cuda_graph,
            recalibrate_int8=args.recalibrate_int8,
        ),
        motion=MotionOptions(relative=args.relative, adapt_scale=args.adapt_scale),
        loop=LoopOptions(mirror=args.mirror, best_frame=args.best_frame, no_face=args.no_face),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or the error's exit code)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )
    try:
        if args.list_cameras:
            from .capture import list_cameras

            cameras = list_cameras()
            if not cameras:
                print("No cameras found. Plug one in, or check that no other app holds it.")
            for camera in cameras:
                print(camera.describe())
            return 0
        from .app import run

        run(options_from_args(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
