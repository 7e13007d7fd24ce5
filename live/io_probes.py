"""The doctor's probes of what surrounds the network: the virtual camera, the cameras, the
checkpoint, the display and the face detector (see :mod:`live.probes` for the conventions)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from .probes import (
    FIX_CAMERA,
    FIX_DISPLAY,
    FIX_OBS,
    FIX_REINSTALL,
    FIX_V4L2_INSTALL,
    FIX_VIDEO_GROUP,
    V4L2_LOAD,
    Check,
    first_line,
    installed,
)

SYSFS_V4L = Path("/sys/class/video4linux")
SYSFS_MODULE = Path("/sys/module/v4l2loopback")
DEV = Path("/dev")

# --- virtual camera ----------------------------------------------------------------------------


def loopback_devices(sysfs: Path = SYSFS_V4L, dev: Path = DEV) -> list[tuple[Path, str]]:
    """(device node, name) of every v4l2loopback device: the video4linux devices that sit
    under /sys/devices/virtual (real cameras sit under their USB or PCI bus)."""
    found = []
    for entry in sorted(sysfs.glob("video*")):
        if "/devices/virtual/" not in str(entry.resolve()):
            continue
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            name = ""
        found.append((dev / entry.name, name))
    return found


def v4l2loopback_installed() -> bool | None:
    """Whether the v4l2loopback kernel module is installed (None: cannot tell here)."""
    modinfo = shutil.which("modinfo") or next(
        (p for p in ("/sbin/modinfo", "/usr/sbin/modinfo") if Path(p).exists()), None
    )
    if modinfo is not None:
        try:
            result = subprocess.run(
                [modinfo, "-n", "v4l2loopback"], capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.returncode == 0
    modules = Path("/lib/modules", platform.release())
    if not modules.is_dir():
        return None
    return any(modules.glob("*/**/v4l2loopback.ko*"))


def open_virtual_camera(device: str | None) -> str:
    """Open the virtual camera as the live run does (default size), close it, and return the
    device it opened; raises VirtualCameraError / MissingDependencyError when it cannot."""
    from .virtualcam import VirtualCamera, VirtualCameraConfig

    with VirtualCamera(VirtualCameraConfig(device=device)) as camera:
        return camera.device


def probe_virtual_camera(device: str | None = None) -> list[Check]:
    """Whether a virtual camera can be opened; on Linux which step of v4l2loopback is missing."""
    section, name = "Virtual camera", "virtual camera"
    if platform.system() == "Linux":
        devices = loopback_devices()
        if not devices:
            if SYSFS_MODULE.exists():
                detail = "the v4l2loopback module is loaded but has no devices"
                fix = f"sudo modprobe -r v4l2loopback && {V4L2_LOAD}"
            elif v4l2loopback_installed():
                detail = "the v4l2loopback kernel module is installed but not loaded"
                fix = V4L2_LOAD
            else:
                detail = "no v4l2loopback device: the kernel module is not installed or loaded"
                fix = FIX_V4L2_INSTALL
            return [Check(section, name, "fail", detail, fix, "vcam")]
        listed = ", ".join(f"{path} ({label or 'unnamed'})" for path, label in devices)
        usable = [path for path, _ in devices if os.access(path, os.R_OK | os.W_OK)]
        if not usable:
            detail = f"v4l2loopback devices {listed}, but this user may not open them"
            return [Check(section, name, "fail", detail, FIX_VIDEO_GROUP, "vcam")]
    if not installed("pyvirtualcam"):
        detail = "the pyvirtualcam package is not installed"
        return [Check(section, name, "fail", detail, FIX_REINSTALL, "vcam")]
    from export.errors import UserError

    try:
        opened = open_virtual_camera(device)
    except UserError as exc:
        detail = f"could not open it: {str(exc).splitlines()[0]}"
        if platform.system() == "Linux":
            fix = (
                f"close other apps sending to it, or: sudo modprobe -r v4l2loopback && {V4L2_LOAD}"
            )
        else:
            fix = FIX_OBS
        return [Check(section, name, "fail", detail, fix, "vcam")]
    return [
        Check(
            section,
            name,
            "ok",
            f"{opened} opens (select it in Zoom, OBS, Meet, Teams)",
            None,
            "vcam",
        )
    ]


# --- cameras -----------------------------------------------------------------------------------


def list_cameras() -> list:
    """The cameras that open and deliver a frame (the one place the doctor imports capture)."""
    from .cameras import list_cameras as find

    return find()


def probe_cameras(camera_input: str = "0") -> list[Check]:
    """Which cameras deliver frames, and whether the one the live run opens is among them."""
    section = "Cameras"
    cameras = list_cameras()
    if not cameras:
        nodes = sorted(DEV.glob("video*")) if platform.system() == "Linux" else []
        loopback = {path for path, _ in loopback_devices()} if nodes else set()
        real = [n for n in nodes if n not in loopback]
        if real and not any(os.access(n, os.R_OK) for n in real):
            detail = f"{', '.join(map(str, real))} exist but this user may not open them"
            return [Check(section, "cameras", "fail", detail, FIX_VIDEO_GROUP, "camera")]
        where = ", ".join(map(str, real)) if real else "no camera devices"
        return [
            Check(
                section, "cameras", "fail", f"none deliver frames ({where})", FIX_CAMERA, "camera"
            )
        ]
    found = "; ".join(camera.describe() for camera in cameras)
    if not camera_input.isdigit():
        return [Check(section, "cameras", "ok", found, None, "camera")]
    if any(camera.index == int(camera_input) for camera in cameras):
        return [Check(section, f"camera {camera_input}", "ok", found, None, "camera")]
    other = cameras[0].index
    detail = f"camera {camera_input} (the default input) is not among them: {found}"
    fix = f"python run_live.py --avatar me.jpg --input {other}"
    return [Check(section, f"camera {camera_input}", "fail", detail, fix, "camera")]


# --- checkpoint, display, face detector --------------------------------------------------------


def probe_checkpoint(
    checkpoint: Path | None = None, config: str | None = None, resolution: int | None = None
) -> list[Check]:
    """The checkpoint the run would load; a --checkpoint file is loaded and checked against
    its config (``config``, or its own) exactly as the run checks it."""
    from export.checkpoint import (
        DEFAULT_CHECKPOINT_NAMES,
        default_checkpoint_dir,
        find_default_checkpoint,
    )
    from export.errors import CheckpointError

    section = "Checkpoint"
    fix = (
        "python run_live.py --avatar me.jpg --download   (downloads and verifies the default "
        f"checkpoint), or put {DEFAULT_CHECKPOINT_NAMES[0]} in {default_checkpoint_dir()}/"
    )
    if checkpoint is not None:
        path = checkpoint.expanduser()
        if not path.is_file():
            return [
                Check(
                    section,
                    "checkpoint",
                    "fail",
                    f"--checkpoint {path} is not a file",
                    fix,
                    "checkpoint",
                )
            ]
        return [_loaded_checkpoint(section, path, config, resolution)]
    else:
        try:
            path = find_default_checkpoint()
        except CheckpointError as exc:
            detail = str(exc).splitlines()[0]
            return [Check(section, "checkpoint", "fail", detail, fix, "checkpoint")]
    size = path.stat().st_size
    detail = f"{path.resolve()} ({size / 2**20:.0f} MiB)"
    if size < 2**20:
        detail += ": under 1 MiB, probably an incomplete download"
        return [Check(section, "checkpoint", "fail", detail, fix, "checkpoint")]
    return [Check(section, "checkpoint", "ok", detail, None, "checkpoint")]


def _loaded_checkpoint(
    section: str, path: Path, config: str | None, resolution: int | None
) -> Check:
    from export.errors import UserError
    from export.model_choice import choose_model

    try:
        checked = choose_model(path, config, resolution)
    except UserError as exc:
        lines = str(exc).splitlines()
        fix = lines[-1] if len(lines) > 1 else "pass another --checkpoint, or the --config it needs"
        return Check(section, "checkpoint", "fail", lines[0], fix, "checkpoint")
    detail = f"{path.resolve()} loads with the config {checked.source}"
    return Check(section, "checkpoint", "ok", detail, None, "checkpoint")


def probe_input(spec: str) -> list[Check]:
    """A file or folder --input: whether it opens and delivers a first frame."""
    from export.errors import UserError

    from .sources import open_source

    try:
        with open_source(spec) as source:
            size = source.size or (0, 0)
            count = source.frame_count
            fps = f"{source.fps:g} fps" if source.fps else "rate unknown"
    except UserError as exc:
        lines = str(exc).splitlines()
        fix = " ".join(lines[1:]) or "pass another --input"
        return [Check("Input", "input", "fail", lines[0], fix, "input")]
    frames = f"{count} frames" if count else "frame count unknown"
    detail = f"{spec} opens: {size[0]}x{size[1]}, {frames}, {fps}"
    return [Check("Input", "input", "ok", detail, None, "input")]


def probe_display(timeout: float = 15.0) -> list[Check]:
    """Whether the preview window can open (it is optional: its absence is a warning)."""
    from .preview import display_available

    if display_available(timeout=timeout):
        return [Check("Display", "preview window", "ok", "an OpenCV window opens", None, "display")]
    env = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    why = "no usable display" + ("" if env else " (DISPLAY and WAYLAND_DISPLAY are unset)")
    detail = f"{why}: the live run works without the preview window"
    return [Check("Display", "preview window", "warn", detail, FIX_DISPLAY, "display")]


def probe_face_detector() -> list[Check]:
    """Start and stop the MediaPipe face detector the live run frames the face with."""
    from .face import FaceDetector

    try:
        with FaceDetector("video"):
            pass
    except Exception as exc:
        detail = f"does not start: {first_line(exc)}"
        return [Check("Face detector", "MediaPipe", "fail", detail, FIX_REINSTALL, "face")]
    return [Check("Face detector", "MediaPipe", "ok", "the face detector starts", None, "face")]
