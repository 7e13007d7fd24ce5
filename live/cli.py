"""The command users run (``run_live.py`` / ``avatarcam``): its flags, and how they map onto
the configuration dataclasses. This module is the one place where flags meet configuration."""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

from engines.options import BACKENDS, PRECISIONS, TRANSPORTS, EngineOptions, RemoteOptions
from export.errors import UserError

from .animator import MotionOptions
from .controls import controls_help
from .errors import SettingError
from .framing import FramingConfig
from .logs import configure_logging
from .loop import LoopOptions
from .marking import MarkingOptions
from .options import CaptureOptions, ModelOptions, OutputOptions, RunOptions
from .startup import IncompleteRun
from .timing import timing_mode
from .ui.options import UiOptions
from .virtualcam import VirtualCameraConfig

log = logging.getLogger("avatarcam")


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
        usage="%(prog)s --avatar IMAGE [options]\n       %(prog)s verify FILE... [--json]",
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
    parser.add_argument_group(
        "commands",
        "verify FILE...        check images, videos or folders for avatarcam's watermark\n"
        "                      and Content Credentials (run_live.py verify --help)",
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
        help="record to a folder (one PNG per frame: 000000.png, ...) or a video file (.mp4, "
        ".mov, .mkv, .avi: H.264; .webm: VP9); never an input, never over earlier output "
        "without --overwrite",
    )
    io.add_argument("--list-cameras", action="store_true", help="list cameras and exit")
    io.add_argument("--camera-size", type=_size, help="camera size to request, e.g. 1280x720")
    io.add_argument("--camera-fps", type=float, help="camera frame rate to request")
    io.add_argument(
        "--pace",
        choices=("realtime", "every"),
        help="file inputs: 'realtime' plays the file at its own rate like a camera (frames the "
        "loop cannot keep up with are dropped; a recording plays as long as the input), "
        "'every' processes every frame as fast as possible (the default for files)",
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
        "--detect-hz",
        type=float,
        default=framing_defaults.detect_hz,
        help="face detections per second, tracked in between; 0 detects on every frame "
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
        help="FOMM checkpoint file, e.g. vox-adv-cpk.pth.tar, or a catalog name (vox-adv-256, "
        "vox-256, vox-adv-256-avatarify) to download (default: looked for in ./checkpoints and "
        "~/.cache/avatarcam/checkpoints, else offered for download)",
    )
    model.add_argument(
        "--config",
        default=ModelOptions.config,
        help="preset (vox-256, vox-adv-256, taichi-256, mgif-256, ...) or an original FOMM "
        "YAML config (default: the checkpoint's own: a YAML beside it with the same name or "
        "the only one there, one embedded in it, its catalog config; else vox-256)",
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
        default="auto",
        help="precision inside the network (default: %(default)s: on a CPU, int8 where it passes "
        "a check against fp32 on your own avatar and input, else fp32; GPUs run fp32). int8 "
        "(OpenVINO) is a quantized frame graph calibrated on your avatar and input on first use",
    )
    engine.add_argument(
        "--device",
        default=EngineOptions.device,
        help="cpu, cuda, cuda:N (NVIDIA), gpu, gpu.N or npu (Intel, with --backend openvino) "
        "or auto (default)",
    )
    engine.add_argument(
        "--compile",
        action="store_true",
        help="torch backend: torch.compile (inductor, CUDA graphs on a GPU, static shapes); "
        "compiles at start",
    )
    engine.add_argument(
        "--cuda-graph", action="store_true", help="capture the frame call in a CUDA graph"
    )
    engine.add_argument(
        "--recalibrate-int8",
        action="store_true",
        help="int8 (and auto on a CPU): calibrate and check the quantized model again on this "
        "run's avatar and input (both are done once per model and device, and cached)",
    )
    engine.add_argument(
        "--remeasure",
        action="store_true",
        help="measure --backend auto's choices again (backend speed, torch.compile or not) and "
        "retry builds and providers that failed on this machine (they are remembered)",
    )

    _add_server_flags(parser)

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
    motion.add_argument(
        "--motion-scale",
        type=float,
        default=MotionOptions.scale,
        metavar="S",
        help="motion strength, 0-3: the change from the reference pose is multiplied by S "
        "(1 as trained, default; lower is calmer and hides keypoint jitter but mutes "
        "expressions; higher exaggerates them and distorts sooner); keys - and +",
    )
    motion.add_argument(
        "--motion-smoothing",
        type=float,
        default=MotionOptions.smoothing,
        metavar="S",
        help="keypoint smoothing, 0-1 (a One Euro filter on the driving keypoints): 0 off "
        "(default), 0.5 steadies a face that shakes in low light, 1 the steadiest; higher "
        "lags more behind quick movements; keys , and .",
    )
    parser.add_argument(
        "--doctor",
        action="store_true",
        help="check which backends, GPU, virtual camera, cameras and checkpoint work here "
        "for the run the other flags describe (--input, --checkpoint, --config, ...), print "
        "the fix for each problem, and exit (0: that run would work)",
    )
    _add_marking_flags(parser)
    _add_ui_flags(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    _add_download_and_recording_flags(io, model)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The remote backend: animate on an avatar server (python -m engines.serve)."""
    server = parser.add_argument_group("remote avatar server")
    server.add_argument(
        "--server",
        metavar="ws://HOST:PORT",
        help="animate on an avatar server instead of this machine (no local checkpoint needed)",
    )
    server.add_argument("--server-token", help="the server's --token, if it has one")
    server.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=RemoteOptions.transport,
        help="frame encoding to and from the server: raw, png (lossless, default) or jpeg",
    )
    server.add_argument(
        "--jpeg-quality",
        type=int,
        default=RemoteOptions.jpeg_quality,
        help="JPEG quality 1-100 for --transport jpeg (default %(default)s)",
    )


def _engine_options(args: argparse.Namespace) -> EngineOptions:
    options = EngineOptions(
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        cuda_graph=args.cuda_graph,
        compile=args.compile,
        recalibrate_int8=args.recalibrate_int8,
        remeasure=args.remeasure,
    )
    if args.server is None:
        if args.backend == "remote":
            raise SettingError("--backend remote needs --server ws://HOST:PORT")
        return options
    if args.backend not in ("auto", "remote"):
        raise SettingError(f"--server runs the model on the server: drop --backend {args.backend}")
    if not 1 <= args.jpeg_quality <= 100:
        raise SettingError(f"--jpeg-quality {args.jpeg_quality}: expected 1 to 100")
    remote = RemoteOptions(
        url=args.server,
        token=args.server_token,
        transport=args.transport,
        jpeg_quality=args.jpeg_quality,
    )
    return replace(options, backend="remote", server=remote)


def _add_download_and_recording_flags(
    io: argparse._ArgumentGroup, model: argparse._ArgumentGroup
) -> None:
    """Flags for downloading checkpoints and for recorded files."""
    io.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what an earlier run wrote to --output (a video file, or the NNNNNN.png "
        "frames of a folder; other files are kept). Without it a non-empty --output is refused",
    )
    io.add_argument(
        "--output-fps",
        type=float,
        help="frame rate of a recorded video (default: the input's rate, 25 when unknown)",
    )
    io.add_argument(
        "--output-size",
        type=_size,
        help="frame size of a recorded video or PNGs, e.g. 512x512 (default: the model's, "
        "256x256; other shapes are letterboxed)",
    )
    io.add_argument(
        "--no-audio",
        dest="audio",
        action="store_false",
        help="do not copy a driving video's audio into a video --output (kept by default)",
    )
    model.add_argument(
        "--download",
        action="store_true",
        help="download a missing checkpoint without asking (verified by its sha256)",
    )
    model.add_argument(
        "--checkpoint-url",
        metavar="URL",
        help="download the checkpoint from URL (needs --checkpoint-sha256)",
    )
    model.add_argument(
        "--checkpoint-sha256",
        metavar="HEX",
        help="sha256 the --checkpoint-url download must have",
    )
    model.add_argument(
        "--allow-insecure-catalog",
        action="store_true",
        help="accept an $AVATARCAM_CATALOG fetched over plain http:// (it names the hashes the "
        "downloads are checked against; by default only https:// or a local file)",
    )


def _flag_problems(args: argparse.Namespace) -> list[str]:
    """Values no option accepts, named by their flags (all of them, not just the first)."""
    problems = []

    def check(flag: str, value: float | None, low: float, high: float, hint: str) -> None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            problems.append(
                f"{flag} {value:g} is out of range: expected {low:g} to {high:g}. {hint}"
            )

    check(
        "--crop-scale",
        args.crop_scale,
        1.0,
        4.0,
        "The default 1.8 frames the head like the "
        "training data; larger shows more around the face.",
    )
    check(
        "--crop-shift",
        args.crop_shift,
        -1.0,
        1.0,
        "It is a fraction of the face height (negative moves the crop down); the default is 0.2.",
    )
    check(
        "--smoothing",
        args.smoothing,
        0.01,
        30.0,
        "It is a frequency in Hz: lower is steadier, higher follows faster; the default is 1.0.",
    )
    check(
        "--detect-hz",
        args.detect_hz,
        0.0,
        120.0,
        "Higher follows fast moves sooner and costs more CPU; the default is 5.",
    )
    check("--camera-fps", args.camera_fps, 1.0, 240.0, "Leave it out to use the camera's rate.")
    check("--output-fps", args.output_fps, 1.0, 240.0, "Leave it out to use the input's rate.")
    for flag, size, even in (
        ("--camera-size", args.camera_size, False),
        ("--virtual-cam-size", args.virtual_cam_size, True),
        ("--output-size", args.output_size, True),
    ):
        if size is None:
            continue
        width, height = size
        if not (16 <= width <= 7680 and 16 <= height <= 7680) or (even and (width | height) & 1):
            problems.append(
                f"{flag} {width}x{height} is not a usable size: expected WIDTHxHEIGHT with each "
                f"side from 16 to 7680 pixels{' and even' if even else ''}, e.g. 1280x720."
            )
    text = str(args.input).strip()
    if re.fullmatch(r"[-+]\d+", text) and int(text) < 0:
        problems.append(
            f"--input {text} is not a camera: camera indexes start at 0 (0 is the first "
            "camera). Run with --list-cameras to see them, or pass a video file or folder."
        )
    return problems


def _add_marking_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of live.marking.MarkingOptions (watermark, label, Content Credentials)."""
    marking = parser.add_argument_group(
        "marking as synthetic",
        "Every frame carries an invisible watermark, and recordings carry signed Content "
        "Credentials (C2PA); check files with: avatarcam verify FILE...",
    )
    marking.add_argument(
        "--no-watermark",
        dest="watermark",
        action="store_false",
        help="do not embed the invisible watermark. Where the law requires AI-generated video "
        "to be machine-detectably marked (e.g. EU AI Act Art. 50), you then have to disclose "
        "it yourself",
    )
    marking.add_argument(
        "--label",
        metavar="TEXT",
        help="show TEXT (e.g. 'AI-generated') in the bottom-left corner of every frame",
    )
    marking.add_argument(
        "--c2pa-cert",
        type=Path,
        metavar="PEM",
        help="PEM certificate chain to sign Content Credentials with (default: a key and "
        "certificate avatarcam generates under ~/.cache/avatarcam/credentials)",
    )
    marking.add_argument(
        "--c2pa-key", type=Path, metavar="PEM", help="PEM private key of --c2pa-cert"
    )
    marking.add_argument(
        "--c2pa-signer-name",
        metavar="NAME",
        help="name to put in the certificate avatarcam generates (it is embedded in every "
        "signed file; default: no name, user or host at all)",
    )


def _add_ui_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of live.ui.options.UiOptions (the control page in the browser)."""
    ui = parser.add_argument_group("control page in the browser")
    ui.add_argument(
        "--ui",
        action="store_true",
        help="serve a control page (gallery, live view, controls, an OBS view at /obs) and "
        "print its URL; needs pip install 'avatarcam[ui]'",
    )
    ui.add_argument(
        "--ui-port", type=int, default=UiOptions.port, help="its port (default %(default)s)"
    )
    ui.add_argument(
        "--ui-host",
        default=UiOptions.host,
        help="address to listen on (default %(default)s: this machine only; others are warned "
        "about)",
    )
    ui.add_argument(
        "--no-browser",
        dest="open_browser",
        action="store_false",
        help="do not open the page in a browser",
    )


def _ui_options(args: argparse.Namespace) -> UiOptions | None:
    if not args.ui:
        return None
    return UiOptions(host=args.ui_host, port=args.ui_port, open_browser=args.open_browser)


def _marking_options(args: argparse.Namespace) -> MarkingOptions:
    return MarkingOptions(
        watermark=args.watermark,
        label=args.label,
        c2pa_cert=args.c2pa_cert,
        c2pa_key=args.c2pa_key,
        c2pa_signer_name=args.c2pa_signer_name,
    )


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Map parsed flags onto :class:`RunOptions` (raises SettingError on invalid values)."""
    problems = _flag_problems(args)
    if args.avatar is None:
        problems.insert(0, "--avatar is required: an image, or a folder of images.")
    if problems:
        raise SettingError("\n".join(problems))
    width, height = args.camera_size or (None, None)
    vcam_width, vcam_height = args.virtual_cam_size
    return RunOptions(
        avatar=args.avatar,
        capture=CaptureOptions(
            input=args.input,
            width=width,
            height=height,
            fps=args.camera_fps,
            timing=timing_mode(False, args.pace) if args.pace else None,
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
            overwrite=args.overwrite,
            video_fps=args.output_fps,
            video_size=args.output_size,
            audio=args.audio,
        ),
        crop=args.crop,
        framing=replace(
            FramingConfig(),
            scale=args.crop_scale,
            vertical_shift=args.crop_shift,
            min_cutoff=args.smoothing,
            detect_hz=args.detect_hz,
        ),
        model=ModelOptions(
            checkpoint=args.checkpoint,
            config=args.config,
            resolution=args.resolution,
            download=args.download,
            checkpoint_url=args.checkpoint_url,
            checkpoint_sha256=args.checkpoint_sha256,
            allow_insecure_catalog=args.allow_insecure_catalog,
        ),
        engine=_engine_options(args),
        motion=MotionOptions(
            relative=args.relative,
            adapt_scale=args.adapt_scale,
            scale=args.motion_scale,
            smoothing=args.motion_smoothing,
        ),
        loop=LoopOptions(mirror=args.mirror, best_frame=args.best_frame, no_face=args.no_face),
        marking=_marking_options(args),
        ui=_ui_options(args),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or the error's exit code)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "verify":
        from .verify import main as verify_main

        return verify_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)  # libraries' chatter only with -v, marked as theirs
    try:
        if args.doctor:
            from .doctor import DoctorOptions, run_doctor

            return run_doctor(
                DoctorOptions(
                    engine=EngineOptions(
                        backend=args.backend, precision=args.precision, device=args.device
                    ),
                    checkpoint=args.checkpoint,
                    camera=args.input,
                    virtual_camera_device=args.virtual_cam_device,
                    virtual_camera=args.virtual_cam,
                    config=args.config,
                    resolution=args.resolution,
                )
            )
        if args.list_cameras:
            from .cameras import list_cameras

            cameras = list_cameras()
            if not cameras:
                print("No cameras found. Plug one in, or check that no other app holds it.")
            for camera in cameras:
                print(camera.describe())
            return 0
        from .app import run_checked

        run_checked(options_from_args(args))
    except IncompleteRun as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
