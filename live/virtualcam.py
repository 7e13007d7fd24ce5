"""Virtual camera output through pyvirtualcam (v4l2loopback on Linux, OBS elsewhere)."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from live.errors import SettingError, VirtualCameraError, missing_base_dependency
from live.resources import Closing

FitMode = Literal["letterbox", "crop"]
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class VirtualCameraConfig:
    """Size, rate and device of the virtual camera."""

    width: int = 1280  # frame width the virtual camera announces
    height: int = 720  # frame height the virtual camera announces
    fps: float | None = None  # frame rate; None = the rate of the input camera
    device: str | None = None  # e.g. /dev/video10 (Linux); None = the first free device
    fit: FitMode = "letterbox"  # square avatar into the frame: black bars, or fill and crop

    def __post_init__(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if not (isinstance(value, int) and 16 <= value <= 7680 and value % 2 == 0):
                raise SettingError(
                    f"Virtual camera {name} {value!r} is invalid: expected an even number of "
                    "pixels from 16 to 7680 (default 1280x720)."
                )
        if self.fps is not None and not (math.isfinite(self.fps) and 1 <= self.fps <= 240):
            raise SettingError(
                f"Virtual camera fps {self.fps} is invalid: expected 1 to 240, or no value to "
                "use the input camera's rate."
            )
        if self.fit not in ("letterbox", "crop"):
            raise SettingError(
                f"Unknown fit mode {self.fit!r}: expected 'letterbox' (black bars) or 'crop' "
                "(fill the frame)."
            )


def fit_frame(
    frame: np.ndarray,
    width: int,
    height: int,
    mode: FitMode = "letterbox",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fit an RGB frame into width x height: letterbox (bars, aspect kept) or crop (fill).

    Writes into ``out`` (height x width x 3 uint8) when given.
    """
    shape = (height, width, 3)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"out must be a {shape} uint8 array, got {out.shape} {out.dtype}")
    source_height, source_width = frame.shape[:2]
    if mode == "letterbox":
        factor = min(width / source_width, height / source_height)
        inner_width = min(width, max(1, round(source_width * factor)))
        inner_height = min(height, max(1, round(source_height * factor)))
        left, top = (width - inner_width) // 2, (height - inner_height) // 2
        out[:top] = 0
        out[top + inner_height :] = 0
        out[top : top + inner_height, :left] = 0
        out[top : top + inner_height, left + inner_width :] = 0
        target = out[top : top + inner_height, left : left + inner_width]
        region = frame
    elif mode == "crop":
        factor = max(width / source_width, height / source_height)
        crop_width = min(source_width, max(1, round(width / factor)))
        crop_height = min(source_height, max(1, round(height / factor)))
        x0, y0 = (source_width - crop_width) // 2, (source_height - crop_height) // 2
        region = frame[y0 : y0 + crop_height, x0 : x0 + crop_width]
        target = out
        inner_width, inner_height = width, height
    else:
        raise ValueError(f"unknown fit mode {mode!r}")
    shrinking = region.shape[1] > inner_width or region.shape[0] > inner_height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if region.shape[:2] == (inner_height, inner_width):
        target[...] = region
    else:
        cv2.resize(region, (inner_width, inner_height), dst=target, interpolation=interpolation)
    return out


class CameraLike(Protocol):
    """The part of ``pyvirtualcam.Camera`` that :class:`VirtualCamera` uses."""

    @property
    def device(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def fps(self) -> float: ...
    def send(self, frame: np.ndarray) -> None: ...
    def sleep_until_next_frame(self) -> None: ...
    def close(self) -> None: ...


CameraFactory = Callable[..., CameraLike]


def _no_virtual_cam_hint() -> str:
    return "Or run with --no-virtual-cam to use the preview window only."


def virtual_camera_help(original: str, device: str | None = None) -> str:
    """Message for a virtual camera that failed to open, with steps for this OS."""
    system = platform.system()
    lines = [f"Could not open a virtual camera: {original}"]
    if system == "Linux":
        lines += [
            "Expected a v4l2loopback video device (/dev/videoN) to send frames to"
            + (f"; {device} is not one." if device else "."),
            "To create one:",
            "  1. Install the kernel module (Debian/Ubuntu): sudo apt install v4l2loopback-dkms",
            "     (optional tools: sudo apt install v4l2loopback-utils)",
            "  2. Load it:",
            '     sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Avatarcam"',
            "     (add video_nr=N to get /dev/videoN)",
            "  3. Run again; to choose the device pass --virtual-cam-device /dev/videoN",
            '     (v4l2-ctl --list-devices shows which one is "Avatarcam").',
        ]
    elif system == "Windows":
        lines += [
            "Expected the OBS Virtual Camera, which OBS Studio 26 or newer installs.",
            "To set it up: install OBS Studio >= 26 from https://obsproject.com, start it, "
            'click "Start Virtual Camera" once, then "Stop Virtual Camera" and close OBS '
            "(it must not use the virtual camera itself); then run again.",
        ]
    elif system == "Darwin":
        lines += [
            "Expected the OBS Virtual Camera, which OBS Studio 30 or newer installs.",
            "To set it up: install OBS Studio >= 30 from https://obsproject.com, start it and "
            'click "Start Virtual Camera" once; approve the system extension when macOS asks '
            "(System Settings > Privacy & Security), then stop the virtual camera, close OBS "
            "and run again.",
        ]
    else:
        lines.append(f"This system ({system or 'unknown'}) has no virtual camera support.")
    lines.append(_no_virtual_cam_hint())
    return "\n".join(lines)


def _pyvirtualcam_factory() -> CameraFactory:
    try:
        import pyvirtualcam
    except ImportError as exc:
        raise missing_base_dependency("pyvirtualcam", "The virtual camera", exc) from exc

    def open_camera(width: int, height: int, fps: float, device: str | None) -> Any:
        return pyvirtualcam.Camera(
            width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device, print_fps=False
        )

    return open_camera


class VirtualCamera(Closing):
    """Sends RGB frames of any size to a virtual camera, fitted to the configured size.

    ``source_fps`` is used when the config leaves fps unset (30 when both are unknown).
    ``camera_factory(width, height, fps, device)`` replaces pyvirtualcam (tests).
    With ``pace=True`` :meth:`send` waits for the camera's next frame slot.
    """

    def __init__(
        self,
        config: VirtualCameraConfig | None = None,
        *,
        source_fps: float | None = None,
        camera_factory: CameraFactory | None = None,
        pace: bool = False,
    ) -> None:
        self.config = config or VirtualCameraConfig()
        fps = self.config.fps or source_fps or DEFAULT_FPS
        if not (math.isfinite(fps) and fps > 0):
            fps = DEFAULT_FPS
        factory = camera_factory or _pyvirtualcam_factory()
        try:
            self._camera: CameraLike | None = factory(
                self.config.width, self.config.height, fps, self.config.device
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise VirtualCameraError(virtual_camera_help(str(exc), self.config.device)) from exc
        self._fps = float(fps)
        self._pace = pace
        self._buffer = np.zeros((self.config.height, self.config.width, 3), np.uint8)
        self._device = str(self._camera.device)
        self._frames_sent = 0

    @property
    def device(self) -> str:
        """The device frames go to, e.g. /dev/video10 or "OBS Virtual Camera"."""
        return self._device

    @property
    def fps(self) -> float:
        """Frame rate announced to the virtual camera."""
        return self._fps

    @property
    def frames_sent(self) -> int:
        """Frames sent so far."""
        return self._frames_sent

    def send(self, frame_rgb: np.ndarray) -> None:
        """Fit an H x W x 3 uint8 RGB frame into the output size and send it."""
        if self._camera is None:
            raise RuntimeError("VirtualCamera is closed")
        fit_frame(
            frame_rgb, self.config.width, self.config.height, self.config.fit, out=self._buffer
        )
        self._camera.send(self._buffer)
        self._frames_sent += 1
        if self._pace:
            self._camera.sleep_until_next_frame()

    def close(self) -> None:
        """Release the virtual camera; safe to call more than once."""
        if self._camera is not None:
            camera, self._camera = self._camera, None
            camera.close()
