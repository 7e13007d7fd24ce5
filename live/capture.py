"""Frame sources (webcams, image folders, GIFs, video files) and a latest-frame grabber.

Every source delivers :class:`Frame` objects with an RGB ``uint8`` image. :func:`open_source`
picks the source from a command-line spec; :class:`LatestFrameGrabber` runs a source on its own
thread so the consumer always gets the newest frame (or every frame, for offline processing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from export.errors import UserError
from live.errors import CameraError, InputError, SettingError
from live.resources import Closing

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
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
    timestamp: float  # time.perf_counter() when captured


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while probing; our errors say what went wrong."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    """A new H x W x 3 RGB array from a decoded uint8 gray, BGR(A) or RGB(A) image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


class FrameSource(Closing, ABC):
    """A stream of frames; iterate it or call :meth:`read` until it returns ``None``."""

    is_live: bool = False  # True for cameras: frames arrive in real time and reads may fail

    def __init__(self) -> None:
        self._next_index = 0
        self._closed = False
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._frame_count: int | None = None

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
        """Next RGB image, or ``None`` at the end of the input or when a camera read fails."""

    @abstractmethod
    def _release(self) -> None:
        """Free the underlying file or device."""

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of the input (or a failed camera read)."""
        if self._closed:
            return None
        image = self._grab()
        if image is None:
            return None
        frame = Frame(image=image, index=self._next_index, timestamp=time.perf_counter())
        self._next_index += 1
        return frame

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
    with _quiet_opencv():
        return cv2.VideoCapture(camera, api_preference)


class _OpenCVSource(FrameSource):
    """A source read through cv2.VideoCapture into one reused BGR buffer; the first frame is
    read while opening (to fail early) and handed out first."""

    def __init__(self) -> None:
        super().__init__()
        self._capture: cv2.VideoCapture | None = None
        self._bgr: np.ndarray | None = None  # reused by every read
        self._pending: np.ndarray | None = None  # first frame, read while opening

    def _grab(self) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        if self._capture is None:
            return None
        ok, bgr = self._capture.read(self._bgr)
        if not ok or bgr is None:
            return None
        if bgr is not self._bgr:
            self._bgr = bgr
            self._size = (int(bgr.shape[1]), int(bgr.shape[0]))
        return _to_rgb(bgr, bgr=True)

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
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
        self._capture = capture
        self._bgr = bgr
        self._pending = _to_rgb(bgr, bgr=True)
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
        self._pending: np.ndarray | None = _read_image_rgb(files[0])
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
        return _read_image_rgb(path)

    def _release(self) -> None:
        self._pending = None


def _read_image_rgb(path: Path) -> np.ndarray:
    """Decode one image file to RGB uint8, or raise InputError naming it."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(
            f"Cannot read the image {path}: {exc}.\nCheck that the file exists and is readable."
        ) from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(
            f"Cannot decode the image {path}.\n"
            f"Expected a valid image ({', '.join(IMAGE_EXTENSIONS)}); the file is empty, "
            "truncated or not an image. Replace or remove it."
        )
    return _to_rgb(image, bgr=True)


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders frame2.png before frame10.png."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts if part)


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder (accepted extensions, any case), sorted by file name."""
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=_natural_key)


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
        with _quiet_opencv():
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
        self._capture = capture
        self._bgr = bgr
        self._pending = _to_rgb(bgr, bgr=True)
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


GrabMode = Literal["latest", "every", "paced"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a grabber waits between attempts to reopen a lost camera."""

    initial_delay: float = 0.5  # seconds before the first attempt
    factor: float = 2.0  # each further wait is this many times longer
    max_delay: float = 5.0  # longest wait between two attempts, in seconds

    def __post_init__(self) -> None:
        if not (self.initial_delay >= 0 and self.factor >= 1 and self.max_delay >= 0):
            raise SettingError(
                f"Invalid camera retry policy {self}: expected initial_delay >= 0, "
                "factor >= 1 and max_delay >= 0."
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 for the first)."""
        return min(self.max_delay, self.initial_delay * self.factor ** max(attempt - 1, 0))


class LatestFrameGrabber(Closing):
    """Reads a :class:`FrameSource` on a daemon thread and hands frames to one consumer.

    Modes: ``"latest"`` keeps only the newest frame (stale ones are dropped and counted);
    ``"every"`` hands over every frame in order, the reader waiting for the consumer;
    ``"paced"`` releases a file's frames at its FPS (or ``fps``) like a camera, newest only.
    A live source that fails is closed and reopened with backoff until :meth:`stop`.
    """

    def __init__(
        self,
        source: FrameSource,
        mode: GrabMode = "latest",
        *,
        fps: float | None = None,
        retry: RetryPolicy | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in ("latest", "every", "paced"):
            raise SettingError(
                f"Unknown grab mode {mode!r}: expected 'latest', 'every' or 'paced'."
            )
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise SettingError(f"Invalid pacing rate {fps} fps: expected a number > 0.")
        self._source = source
        self._mode: GrabMode = mode
        self._pace_fps = fps
        self._retry = retry or RetryPolicy()
        self._on_status = on_status
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: Frame | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._dropped = 0
        self._delivered = 0
        self._status = "not started"
        self._error: BaseException | None = None
        self._interval: float | None = None  # smoothed seconds between frames read

    @property
    def source(self) -> FrameSource:
        """The source being read."""
        return self._source

    @property
    def mode(self) -> GrabMode:
        """The hand-over mode."""
        return self._mode

    @property
    def dropped(self) -> int:
        """Frames that were replaced by a newer one before the consumer took them."""
        with self._cond:
            return self._dropped

    @property
    def delivered(self) -> int:
        """Frames handed to the consumer."""
        with self._cond:
            return self._delivered

    @property
    def status(self) -> str:
        """Short state for the user: "ok", "camera lost, retrying (attempt 3)", "end of input"."""
        with self._cond:
            return self._status

    @property
    def measured_fps(self) -> float | None:
        """Frames per second actually read from the source (smoothed), None before two."""
        with self._cond:
            interval = self._interval
        return 1.0 / interval if interval else None

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the reader thread, if any."""
        with self._cond:
            return self._error

    @property
    def finished(self) -> bool:
        """True once the reader has ended (input over, stopped or failed) and no frame waits."""
        with self._cond:
            return self._thread is not None and not self._running and self._slot is None

    def _set_status(self, status: str) -> None:
        with self._cond:
            if status == self._status:
                return
            self._status = status
        if self._on_status is not None:
            self._on_status(status)

    def start(self) -> LatestFrameGrabber:
        """Start the reader thread; returns self."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("LatestFrameGrabber.start() called twice")
            self._running = True
            self._thread = threading.Thread(
                target=self._run, name=f"capture {self._source.name}", daemon=True
            )
        self._set_status("ok")
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """Block until a frame newer than the last one handed over arrives.

        Returns ``None`` on timeout or when the reader has finished; re-raises the error that
        stopped the reader (e.g. an unreadable image in a folder).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                raise RuntimeError("LatestFrameGrabber.get() before start()")
            while self._slot is None:
                if not self._running:
                    if self._error is not None:
                        raise self._error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._delivered += 1
            self._cond.notify_all()
            return frame

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the reader, release the source and drop any waiting frame (waits ``timeout`` s)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            self._source.close()
            self._set_status("stopped")
            return
        if thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            self._slot = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> LatestFrameGrabber:
        if self._thread is None:
            self.start()
        return self

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._mode == "every":
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            elif self._slot is not None:
                self._dropped += 1
            self._slot = frame
            self._cond.notify_all()

    def _reconnect(self) -> bool:
        """Reopen a lost live source with backoff; False when stopped first."""
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._set_status(f"camera lost, retrying (attempt {attempt})")
            if self._stop.wait(self._retry.delay(attempt)):
                return False
            try:
                self._source.reopen()
            except (UserError, OSError, RuntimeError, cv2.error):
                continue
            self._set_status("ok")
            return True
        return False

    def _run(self) -> None:
        source = self._source
        period = 0.0
        if self._mode == "paced":
            period = 1.0 / (self._pace_fps or source.fps or 25.0)
        due = time.perf_counter()
        previous: float | None = None
        final_status = "stopped"
        try:
            while not self._stop.is_set():
                try:
                    frame = source.read()
                except (UserError, OSError, RuntimeError, cv2.error):
                    if not source.is_live:
                        raise
                    frame = None
                if frame is None:
                    if not source.is_live:
                        final_status = "end of input"
                        break
                    if not self._reconnect():
                        break
                    previous = None
                    continue
                if period:
                    now = time.perf_counter()
                    if due > now and self._stop.wait(due - now):
                        break
                    due = max(due + period, time.perf_counter() - period)
                    frame = dataclasses.replace(frame, timestamp=time.perf_counter())
                if previous is not None and frame.timestamp > previous:
                    step = frame.timestamp - previous
                    with self._cond:
                        self._interval = (
                            step if self._interval is None else 0.9 * self._interval + 0.1 * step
                        )
                previous = frame.timestamp
                self._publish(frame)
        except BaseException as exc:  # handed to the consumer by get()
            with self._cond:
                self._error = exc
            final_status = f"error: {exc}".splitlines()[0]
        finally:
            try:
                source.close()
            finally:
                self._set_status(final_status)
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
