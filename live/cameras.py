"""Camera listing for ``--list-cameras``: which cameras open and what they deliver."""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

from live.errors import CameraError
from live.sources import CameraSource


@dataclass(frozen=True)
class CameraInfo:
    """A camera found by :func:`list_cameras`."""

    index: int  # camera index to pass as the input (the N of /dev/videoN on Linux)
    device: str | None  # /dev/videoN on Linux, None elsewhere
    name: str | None  # driver's name for the device where the OS tells it (Linux), else None
    width: int  # width of the frames it delivers by default
    height: int  # height of the frames it delivers by default
    fps: float | None  # frame rate it reports, None when unknown

    def describe(self) -> str:
        """One line for ``--list-cameras``."""
        where = f"{self.index}" + (f" ({self.device})" if self.device else "")
        rate = f" @ {self.fps:g} fps" if self.fps else ""
        label = f"  {self.name}" if self.name else ""
        return f"{where}: {self.width}x{self.height}{rate}{label}"


def _linux_camera_devices(dev: Path = Path("/dev")) -> list[tuple[int, str]]:
    """(N, path) of every /dev/videoN, sorted by N."""
    found = []
    for entry in dev.glob("video*"):
        match = re.fullmatch(r"video(\d+)", entry.name)
        if match:
            found.append((int(match.group(1)), str(entry)))
    return sorted(found)


def _linux_device_name(index: int) -> str | None:
    try:
        return Path(f"/sys/class/video4linux/video{index}/name").read_text().strip() or None
    except OSError:
        return None


def list_cameras(max_index: int = 10) -> list[CameraInfo]:
    """Cameras that open and deliver a frame.

    On Linux every ``/dev/videoN`` is probed; elsewhere the indices ``0 .. max_index - 1``.
    """
    if platform.system() == "Linux":
        candidates: list[tuple[int, int | str, str | None]] = [
            (index, path, path) for index, path in _linux_camera_devices()
        ]
    else:
        candidates = [(index, index, None) for index in range(max_index)]
    cameras = []
    for index, camera, device in candidates:
        try:
            source = CameraSource(camera)
        except CameraError:
            continue
        with source:
            width, height = source.size or (0, 0)
            cameras.append(
                CameraInfo(
                    index=index,
                    device=device,
                    name=_linux_device_name(index) if device else None,
                    width=width,
                    height=height,
                    fps=source.fps,
                )
            )
    return cameras
