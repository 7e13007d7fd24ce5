"""Preview window: camera view with the crop box beside the animated avatar, plus overlays.

:func:`compose_preview` draws the picture (pure, no display needed); :class:`PreviewWindow`
shows it with OpenCV's HighGUI and reports key presses and the window being closed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from live.errors import DisplayError, SettingError
from live.framing import CropBox
from live.resources import Closing

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.5
LINE_HEIGHT = 18  # pixels per text line
STATUS_BAR_HEIGHT = 24  # pixels of the status bar under the camera view
BOX_COLOR = (0, 230, 0)  # RGB of the crop box
TEXT_COLOR = (255, 255, 255)
PANEL_COLOR = (24, 24, 24)  # background of text boxes

_PROBE = """
import sys
import cv2
try:
    cv2.namedWindow("avatarcam display probe", cv2.WINDOW_AUTOSIZE)
    cv2.waitKey(1)
    cv2.destroyAllWindows()
    cv2.waitKey(1)
except cv2.error:
    sys.exit(1)
"""


def quiet_qt() -> None:
    """Keep OpenCV's Qt backend from printing warnings a user cannot act on: point it at a
    font folder that exists (OpenCV's own, else the system's; Qt otherwise warns about a
    missing font directory) and drop Qt's platform and font logging categories. Settings the
    user made in the environment are kept."""
    fonts = [Path(cv2.__file__).parent / "qt" / "fonts", Path("/usr/share/fonts/truetype")]
    found = next((str(f) for f in fonts if f.is_dir()), None)
    if found is not None:
        os.environ.setdefault("QT_QPA_FONTDIR", found)
    os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false;qt.text.font.*=false")


def display_available(timeout: float = 20.0) -> bool:
    """True when an OpenCV window can be opened here.

    On Linux DISPLAY or WAYLAND_DISPLAY must be set; the window is then tried in a child
    process, because OpenCV's Qt backend aborts the whole process when it cannot connect.
    """
    if platform.system() not in ("Windows", "Darwin") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    quiet_qt()  # the probe inherits the environment
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _format_stats(stats: Mapping[str, float]) -> list[str]:
    lines = []
    for key, value in stats.items():
        if key.lower() == "fps":
            lines.append(f"FPS {value:.1f}")
        elif key == "motion scale":
            lines.append(f"motion x{value:.1f}")
        elif key == "motion smoothing":
            lines.append(f"smoothing {value:.1f}" if value > 0 else "smoothing off")
        else:
            lines.append(f"{key} {value:.1f} ms")
    return lines


def _text_box(canvas: np.ndarray, lines: list[str], x: int, y: int) -> None:
    """Text lines on a dark box with its top-left corner at (x, y)."""
    if not lines:
        return
    width = max(cv2.getTextSize(line, FONT, TEXT_SCALE, 1)[0][0] for line in lines)
    bottom = y + LINE_HEIGHT * len(lines) + 6
    cv2.rectangle(canvas, (x, y), (x + width + 10, bottom), PANEL_COLOR, cv2.FILLED)
    for row, line in enumerate(lines):
        baseline = y + LINE_HEIGHT * (row + 1)
        cv2.putText(canvas, line, (x + 5, baseline), FONT, TEXT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)


def _blend_avatar(
    panel: np.ndarray, avatar: np.ndarray, box: CropBox, scale: float, alpha: float
) -> None:
    """Blend the avatar into the crop box area of the camera panel (for lining up)."""
    side = round(box.size * scale)
    left, top = round(box.x * scale), round(box.y * scale)
    height, width = panel.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    if side < 2 or x0 >= x1 or y0 >= y1:
        return
    resized = cv2.resize(avatar, (side, side), interpolation=cv2.INTER_AREA)
    part = resized[y0 - top : y1 - top, x0 - left : x1 - left]
    region = panel[y0:y1, x0:x1]
    cv2.addWeighted(region, 1.0 - alpha, part, alpha, 0.0, dst=region)


def compose_preview(
    camera_rgb: np.ndarray,
    avatar_rgb: np.ndarray | None,
    crop_box: CropBox | None,
    stats: Mapping[str, float],
    status: str,
    *,
    show_stats: bool = True,
    overlay: bool = False,
    overlay_alpha: float = 0.4,
    height: int = 360,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Side-by-side RGB picture: camera (crop box, status, stats) | animated avatar.

    The result is ``height`` pixels high and ``camera width scaled + height`` wide. ``stats``
    maps names to milliseconds, except ``"fps"``. ``overlay`` blends the avatar into the crop
    box. Writes into ``out`` when it has the right shape.
    """
    if height < 2 * STATUS_BAR_HEIGHT:
        raise SettingError(f"Preview height {height} is too small: expected at least 48.")
    camera_height, camera_width = camera_rgb.shape[:2]
    scale = height / camera_height
    panel_width = max(1, round(camera_width * scale))
    shape = (height, panel_width + height, 3)
    if out is None or out.shape != shape or out.dtype != np.uint8:
        out = np.empty(shape, np.uint8)
    panel = out[:, :panel_width]
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    cv2.resize(camera_rgb, (panel_width, height), dst=panel, interpolation=interpolation)
    avatar_panel = out[:, panel_width:]
    if avatar_rgb is None:
        avatar_panel[:] = 0
        _text_box(avatar_panel, ["no avatar frame yet"], 8, height // 2 - LINE_HEIGHT)
    else:
        shrink = avatar_rgb.shape[0] > height
        cv2.resize(
            avatar_rgb,
            (height, height),
            dst=avatar_panel,
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
    if crop_box is not None:
        if overlay and avatar_rgb is not None:
            _blend_avatar(panel, avatar_rgb, crop_box, scale, overlay_alpha)
        top_left = (round(crop_box.x * scale), round(crop_box.y * scale))
        side = round(crop_box.size * scale)
        bottom_right = (top_left[0] + side, top_left[1] + side)
        cv2.rectangle(panel, top_left, bottom_right, BOX_COLOR, 2)
    cv2.rectangle(
        panel, (0, height - STATUS_BAR_HEIGHT), (panel_width, height), PANEL_COLOR, cv2.FILLED
    )
    cv2.putText(panel, status, (6, height - 7), FONT, TEXT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    if show_stats:
        _text_box(panel, _format_stats(stats), 6, 6)
    return out


class PreviewWindow(Closing):
    """An OpenCV window showing :func:`compose_preview`; toggle ``show_stats``/``overlay``."""

    def __init__(
        self,
        title: str = "avatarcam",
        *,
        show_stats: bool = True,
        overlay: bool = False,
        overlay_alpha: float = 0.4,
        height: int = 360,
        check_display: bool = True,
    ) -> None:
        if not 0.0 <= overlay_alpha <= 1.0:
            raise SettingError(
                f"Overlay opacity {overlay_alpha} is out of range: expected 0 to 1 (default 0.4)."
            )
        if check_display and not display_available():
            raise DisplayError(
                "Cannot open the preview window: no usable display.\n"
                "Expected a desktop session (on Linux DISPLAY or WAYLAND_DISPLAY set, with an X "
                "server that accepts connections; OpenCV's window needs X11 or XWayland).\n"
                "Run from a terminal of your desktop session, or pass --no-preview to run "
                "without the window."
            )
        self.title = title
        self.show_stats = show_stats  # draw FPS and latencies
        self.overlay = overlay  # blend the avatar into the crop box
        self.overlay_alpha = overlay_alpha
        self.height = height
        try:
            quiet_qt()
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error as exc:
            raise DisplayError(
                f"Cannot open the preview window: {exc}.\n"
                "Expected an OpenCV with GUI support (opencv-contrib-python, not a headless "
                "build). Reinstall with pip install avatarcam, or pass --no-preview."
            ) from exc
        self._canvas: np.ndarray | None = None
        self._bgr: np.ndarray | None = None
        self._shown = False  # visibility is only meaningful after the first imshow
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the user closed the window (or :meth:`close` was called)."""
        if not self._closed and self._shown:
            try:
                visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
            except cv2.error:
                visible = -1.0
            if visible < 1:
                self._closed = True
        return self._closed

    def show(
        self,
        camera_rgb: np.ndarray,
        avatar_rgb: np.ndarray | None,
        crop_box: CropBox | None,
        stats: Mapping[str, float],
        status: str,
    ) -> int | None:
        """Draw one frame and poll the keyboard; the key code pressed, or None.

        After the window has been closed nothing is drawn and None is returned.
        """
        if self.closed:
            return None
        self._canvas = compose_preview(
            camera_rgb,
            avatar_rgb,
            crop_box,
            stats,
            status,
            show_stats=self.show_stats,
            overlay=self.overlay,
            overlay_alpha=self.overlay_alpha,
            height=self.height,
            out=self._canvas,
        )
        if self._bgr is None or self._bgr.shape != self._canvas.shape:
            self._bgr = np.empty_like(self._canvas)
        cv2.cvtColor(self._canvas, cv2.COLOR_RGB2BGR, dst=self._bgr)
        cv2.imshow(self.title, self._bgr)
        self._shown = True
        key = cv2.waitKeyEx(1)
        if self.closed:
            return None
        return None if key < 0 else key

    def close(self) -> None:
        """Close the window; safe to call more than once."""
        if not self._closed:
            self._closed = True
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
