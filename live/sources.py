"""Frame sources: webcams, image folders, single images, GIFs and video files.

Every source delivers :class:`Frame` objects with an RGB ``uint8`` image; :func:`open_source`
picks the source from a command-line spec.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from live.errors import CameraError, InputError
from live.images import IMAGE_EXTENSIONS, image_files, quiet_opencv, read_image_rgb, to_rgb
from live.resources import Closing

_DEVICE_PATTERN = re.compile(r"^/dev/video(\d+)$")
_INPUT_KINDS = (
    "a camera index (0, 1, ...), a camera device (/dev/videoN), a folder of images, "
    "a GIF or a video file"
)


@dataclass(frozen=True)
class Frame:
    """One captured frame."""

    image: np.ndarray  # H x W x 3 uint8 RGB
    index: int  # position in the source's stream, 0 for the first frame delivered
    timestamp: float  # time.perf_counter() when captured (before decoding), for latency
    pts: float = 0.0  # presentation time: seconds since the stream began (files: index / fps)


#: Frame rate assumed for a file input that announces none.
DEFAULT_FPS = 25.0


class FrameSource(Closing, ABC):
    """A stream of frames; iterate it or call :meth:`read` until it returns ``None``."""

    is_live: bool = False  # True for cameras: frames arrive in real time and reads may fail

    def __init__(self) -> None:
        self._next_index = 0
        self._closed = False
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._frame_count: int | None = None
        self._captured_at: float | None = None  # set by _grab() at the moment of capture
        self._origin: float | None = None  # capture time of a live source's first frame
        self._captured_image: np.ndarray | None = None  # from _capture(), for _decode()
        self._grabbed: tuple[int, float, float] | None = None  # (index, captured, pts) grabbed

    @property
    @abstractmethod
    def name(self) -> str:
        """Human-readable name: the path or camera device."""

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the delivered frames (of the first one for image folders)."""
        return self._size

    @property
    def fps(self) -> float | None:
        """Frame rate the source reports or delivers, ``None`` when unknown."""
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """Number of frames of a file source, ``None`` for cameras or when unknown."""
        return self._frame_count

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @abstractmethod
    def _grab(self) -> np.ndarray | None:
        """Next RGB image, or ``None`` at the end of the input or when a camera read fails.

        A source that can tell the moment of capture from the decoding (a camera: grab, then
        retrieve) stores it in ``self._captured_at``; otherwise the read's start is used."""

    @abstractmethod
    def _release(self) -> None:
        """Free the underlying file or device."""

    def _capture(self) -> bool:
        """Capture the next frame, decoding it only where the two cannot be told apart;
        False at the end of the input (or a failed camera read). Default: :meth:`_grab`."""
        self._captured_image = self._grab()
        return self._captured_image is not None

    def _decode(self) -> np.ndarray | None:
        """The RGB image of the frame captured last (decoded now where it was not yet)."""
        image, self._captured_image = self._captured_image, None
        return image

    def grab(self) -> bool:
        """Capture the next frame without decoding it yet (cameras and video files: the
        colour conversion and, for cameras, the decoding wait for :meth:`retrieve`); False at
        the end of the input or on a failed camera read. A frame that is grabbed and never
        retrieved costs little: the grabber skips stale frames this way."""
        self._grabbed = None
        if self._closed:
            return False
        self._captured_at = None
        started = time.perf_counter()
        if not self._capture():
            return False
        captured = self._captured_at if self._captured_at is not None else started
        index = self._next_index
        if self.is_live:  # the capture clock, from the first frame (reopening keeps it)
            if self._origin is None:
                self._origin = captured
            pts = captured - self._origin
        else:  # the file's own clock
            pts = index / (self._fps or DEFAULT_FPS)
        self._next_index += 1
        self._grabbed = (index, captured, pts)
        return True

    @property
    def grabbed(self) -> tuple[int, float, float] | None:
        """(index, capture time, presentation time) of the frame grabbed and not yet
        retrieved, None when there is none."""
        return self._grabbed

    def retrieve(self) -> Frame | None:
        """The frame :meth:`grab` captured, decoded; None when there is none (or it cannot
        be decoded)."""
        grabbed, self._grabbed = self._grabbed, None
        if grabbed is None:
            return None
        image = self._decode()
        if image is None:
            return None
        index, captured, pts = grabbed
        return Frame(image=image, index=index, timestamp=captured, pts=pts)

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of the input (or a failed camera read)."""
        return self.retrieve() if self.grab() else None

    def reopen(self) -> None:
        """Release and open the device again (live sources only); raises on failure."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reopened")

    def close(self) -> None:
        """Release the file or device; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._release()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame


def _camera_label(camera: int | str) -> str:
    return f"index {camera}" if isinstance(camera, int) else f"device {camera}"


def _open_capture(camera: int | str, api_preference: int) -> cv2.VideoCapture:
    """cv2.VideoCapture for a camera index or device path (patched in tests)."""
    with quiet_opencv():
        return cv2.VideoCapture(camera, api_preference)


class _OpenCVSource(FrameSource):
    """A source read through cv2.VideoCapture into one reused BGR buffer; the first frame is
    read while opening (to fail early) and handed out first."""

    def __init__(self) -> None:
        super().__init__()
        self._capture_device: cv2.VideoCapture | None = None  # the open device or file
        self._bgr: np.ndarray | None = None  # reused by every read
        self._pending: np.ndarray | None = None  # first frame, read while opening

    def _grab(self) -> np.ndarray | None:
        return self._decode() if self._capture() else None

    def _capture(self) -> bool:
        if self._pending is not None:
            self._captured_image, self._pending = self._pending, None
            return True
        if self._capture_device is None or not self._capture_device.grab():
            return False
        self._captured_at = time.perf_counter()  # captured: decoding follows
        self._captured_image = None
        return True

    def _decode(self) -> np.ndarray | None:
        if self._captured_image is not None:  # the first frame, decoded while opening
            image, self._captured_image = self._captured_image, None
            return image
        if self._capture_device is None:
            return None
        ok, bgr = self._capture_device.retrieve(self._bgr)
        if not ok or bgr is None:
            return None
        if bgr is not self._bgr:
            self._bgr = bgr
            self._size = (int(bgr.shape[1]), int(bgr.shape[0]))
        return to_rgb(bgr, bgr=True)

    def _release(self) -> None:
        if self._capture_device is not None:
            self._capture_device.release()
            self._capture_device = None
        self._pending = None


class CameraSource(_OpenCVSource):
    """A webcam opened with OpenCV; reports the resolution and FPS it actually delivers."""

    is_live = True

    def __init__(
        self,
        camera: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        api_preference: int | None = None,
    ) -> None:
        super().__init__()
        self._camera = camera
        self._requested = (width, height, fps)
        if api_preference is None:
            api_preference = cv2.CAP_V4L2 if isinstance(camera, str) else cv2.CAP_ANY
        self._api = api_preference
        self._open()

    @property
    def name(self) -> str:
        return f"camera {_camera_label(self._camera)}"

    def _open(self) -> None:
        label = _camera_label(self._camera)
        if isinstance(self._camera, str) and not Path(self._camera).exists():
            raise CameraError(
                f"Camera device {self._camera} does not exist.\n"
                "Expected a video device such as /dev/video0.\n"
                "Run `avatarcam --list-cameras` to see the cameras this machine has."
            )
        capture = _open_capture(self._camera, self._api)
        if not capture.isOpened():
            capture.release()
            raise CameraError(
                f"Could not open the camera at {label}.\n"
                "Expected a webcam that OpenCV can open there.\n"
                "Run `avatarcam --list-cameras` to see the available cameras and pick one of "
                "them; check that no other application (Zoom, OBS, a browser tab) holds the "
                "camera, and that this program may use it (macOS: System Settings > Privacy & "
                "Security > Camera)."
            )
        width, height, fps = self._requested
        if width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, float(width))
        if height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, float(height))
        if fps is not None:
            capture.set(cv2.CAP_PROP_FPS, float(fps))
        ok, bgr = capture.read()
        if not ok or bgr is None:
            capture.release()
            raise CameraError(
                f"The camera at {label} opened but delivered no frame.\n"
                "Expected it to stream video.\n"
                "Check that no other application holds the camera, unplug and replug it, or "
                "pick another one from `avatarcam --list-cameras`."
            )
        self._capture_device = capture
        self._bgr = bgr
        self._pending = to_rgb(bgr, bgr=True)
        self._size = (int(bgr.shape[1]), int(bgr.shape[0]))
        reported = float(capture.get(cv2.CAP_PROP_FPS))
        self._fps = reported if math.isfinite(reported) and reported > 0 else None

    def reopen(self) -> None:
        self._release()
        self._open()
        self._closed = False


class ImageFilesSource(FrameSource):
    """Still images read in the given order (an image folder or a single image file)."""

    def __init__(self, files: list[Path], name: str, *, fps: float | None = None) -> None:
        super().__init__()
        if not files:
            raise InputError(f"{name} has no images.")
        self._files = files
        self._name = name
        self._position = 1
        self._pending: np.ndarray | None = read_image_rgb(files[0])
        self._size = (int(self._pending.shape[1]), int(self._pending.shape[0]))
        self._fps = fps
        self._frame_count = len(files)

    @property
    def name(self) -> str:
        return self._name

    @property
    def files(self) -> list[Path]:
        """The image files, in the order they are delivered."""
        return list(self._files)

    def _grab(self) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        if self._position >= len(self._files):
            return None
        path = self._files[self._position]
        self._position += 1
        return read_image_rgb(path)

    def _release(self) -> None:
        self._pending = None


class GifSource(FrameSource):
    """All frames of an animated GIF, decoded with Pillow."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from PIL import Image, UnidentifiedImageError

        self._path = path
        try:
            self._image = Image.open(path)
            self._image.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(
                f"Cannot decode the GIF {path}: {exc}.\n"
                "Expected a valid GIF image; check that the file is complete, or convert it "
                "to mp4 (ffmpeg -i in.gif out.mp4)."
            ) from exc
        self._frame_count = int(getattr(self._image, "n_frames", 1))
        self._size = (int(self._image.width), int(self._image.height))
        duration = self._image.info.get("duration")
        self._fps = 1000.0 / float(duration) if duration else None
        self._position = 0

    @property
    def name(self) -> str:
        return str(self._path)

    def _grab(self) -> np.ndarray | None:
        if self._frame_count is None or self._position >= self._frame_count:
            return None
        try:
            self._image.seek(self._position)
            rgb = self._image.convert("RGB")
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(
                f"Cannot decode frame {self._position} of the GIF {self._path}: {exc}.\n"
                "The file is probably truncated; re-export it or convert it to mp4."
            ) from exc
        self._position += 1
        return np.asarray(rgb, dtype=np.uint8).copy()

    def _release(self) -> None:
        self._image.close()


class VideoFileSource(_OpenCVSource):
    """A video file decoded by OpenCV (FFmpeg)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        with quiet_opencv():
            capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise InputError(
                f"Cannot decode {path} as a video.\n"
                f"Expected {_INPUT_KINDS} that OpenCV can read (mp4, avi, mov, mkv, webm).\n"
                "Check that the file is complete, or convert it: ffmpeg -i INPUT -c:v libx264 "
                "output.mp4"
            )
        ok, bgr = capture.read()
        if not ok or bgr is None:
            capture.release()
            raise InputError(
                f"The video {path} has zero frames (none could be decoded).\n"
                "Expected a video with at least one frame; re-export or re-encode it "
                "(ffmpeg -i INPUT -c:v libx264 output.mp4)."
            )
        self._capture_device = capture
        self._bgr = bgr
        self._pending = to_rgb(bgr, bgr=True)
        self._size = (int(bgr.shape[1]), int(bgr.shape[0]))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self._fps = fps if math.isfinite(fps) and fps > 0 else None
        count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._frame_count = int(count) if math.isfinite(count) and count > 0 else None

    @property
    def name(self) -> str:
        return str(self._path)


def open_source(
    spec: str | int | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> FrameSource:
    """Open a camera index/device, an image folder, a GIF, an image or a video file.

    ``width``/``height``/``fps`` are requested from cameras (they may deliver something else:
    read :attr:`FrameSource.size`/``fps``); ``fps`` is also the nominal rate of image folders.
    """
    if isinstance(spec, bool):
        raise InputError(f"Invalid input {spec!r}. Expected {_INPUT_KINDS}.")
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        if spec < 0:
            raise InputError(
                f"Camera index {spec} is negative.\n"
                "Expected 0, 1, ...; run `avatarcam --list-cameras` to see the cameras."
            )
        return CameraSource(spec, width=width, height=height, fps=fps)
    text = str(spec)
    if _DEVICE_PATTERN.match(text):
        return CameraSource(text, width=width, height=height, fps=fps)
    if not text.strip():
        raise InputError(f"The input is empty. Expected {_INPUT_KINDS}.")
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(
            f"{path} does not exist.\nExpected {_INPUT_KINDS}.\n"
            "Check the path (relative paths start at the current directory)."
        )
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise InputError(
                f"The folder {path} contains no images.\n"
                f"Expected image files with one of the extensions {', '.join(IMAGE_EXTENSIONS)} "
                "(upper or lower case); put the frames there or pass a video file instead."
            )
        return ImageFilesSource(files, str(path), fps=fps)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return GifSource(path)
    if suffix in IMAGE_EXTENSIONS:
        return ImageFilesSource([path], str(path), fps=fps)
    return VideoFileSource(path)
