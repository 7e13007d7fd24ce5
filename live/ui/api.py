"""The control page's HTTP API (Starlette): state, actions, streams, thumbnails and uploads.

Every action goes through :meth:`live.loop.LiveLoop.post`, the same way the preview window's
keys do; nothing here touches the loop's state directly. Bodies are read with a size bound
before anything is buffered. See the README ("Control page") for the endpoints.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..animator import MOTION_SCALE_RANGE
from ..controls import KEY_BINDINGS, Action
from ..errors import SettingError
from ..framing import FramingConfig
from ..loop import LiveLoop
from ..marking import FrameMarker, MarkingOptions
from ..smoothing import SMOOTHING_RANGE
from .bridge import VIEWS, FrameBridge, stats_for_page
from .uploads import MAX_UPLOAD_BYTES, UploadRefused, check_photo, save_photo, too_big_message

log = logging.getLogger("avatarcam")

#: Largest JSON body of an action (bytes).
MAX_JSON_BYTES = 4096
#: How long a snapshot request waits for a frame (seconds).
SNAPSHOT_WAIT = 3.0
_BOUNDARY = "avatarcamframe"


@dataclass(frozen=True)
class RunInfo:
    """What the page shows about the run, fixed at start."""

    engine: dict[str, str]  # backend, precision, device
    camera: dict[str, Any]  # name, size, fps, live
    virtual_camera: dict[str, Any] | None  # device, size; None without one
    avatar_folder: Path | None  # where uploads are saved; None when --avatar is one file
    resolution: int  # model frame size
    crop: bool  # avatars are framed around their face
    framing: FramingConfig  # how avatars are framed
    marking: MarkingOptions  # watermark and label at start
    engine_marks: bool  # the engine marks its own frames


def _keys() -> dict[str, str]:
    """Action name -> the preview window's keys for it, as the page shows them."""
    keys = {}
    for binding in KEY_BINDINGS:
        digits = len(binding.keys) > 2 and all(k.isdigit() for k in binding.keys)
        keys[binding.action.value] = (
            f"{binding.keys[0]}-{binding.keys[-1]}" if digits else " / ".join(binding.keys)
        )
    return keys


class ControlApi:
    """Routes of the page for one run; build the ASGI app with :meth:`app`."""

    def __init__(self, loop: LiveLoop, bridge: FrameBridge, info: RunInfo):
        self.loop = loop
        self.bridge = bridge
        self.info = info
        self.label = info.marking.label  # the label shown now
        self._upload_lock = threading.Lock()  # one upload is checked at a time
        self._thumbs: dict[tuple[int, str], bytes] = {}

    def app(self) -> Starlette:
        post = ["POST"]
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/obs", self.page, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/api/state", self.state, methods=["GET"]),
            Route("/api/avatars/{index:int}/thumb.jpg", self.thumb, methods=["GET"]),
            Route("/api/snapshot/{view}.jpg", self.snapshot, methods=["GET"]),
            Route("/stream/{view}.mjpg", self.stream, methods=["GET"]),
            Route("/api/avatar", self.select_avatar, methods=post),
            Route("/api/calibrate", self.simple(Action.RECALIBRATE), methods=post),
            Route("/api/pause", self.toggle(Action.TOGGLE_PAUSE, "paused"), methods=post),
            Route("/api/mirror", self.toggle(Action.TOGGLE_MIRROR, "mirror"), methods=post),
            Route(
                "/api/best-frame",
                self.toggle(Action.TOGGLE_BEST_FRAME, "best_frame"),
                methods=post,
            ),
            Route("/api/motion", self.motion, methods=post),
            Route("/api/label", self.set_label, methods=post),
            Route("/api/quit", self.simple(Action.QUIT), methods=post),
            Route("/api/upload", self.upload, methods=post),
        ]
        return Starlette(routes=routes)

    # --- pages -----------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        name = "obs.html" if request.url.path == "/obs" else "index.html"
        return Response(_static(name), media_type="text/html; charset=utf-8")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        types = {".js": "text/javascript", ".css": "text/css"}
        kind = types.get(Path(name).suffix)
        if kind is None or "/" in name or name.startswith("."):
            return _error("no such file", 404)
        try:
            data = _static(name)
        except FileNotFoundError:
            return _error("no such file", 404)
        return Response(data, media_type=f"{kind}; charset=utf-8")

    # --- state -----------------------------------------------------------------------------

    async def state(self, request: Request) -> Response:
        loop = self.loop
        status, stats, frames = self.bridge.status()
        fps, stages = stats_for_page(stats)
        delay = self.bridge.delay_ms
        camera_status = loop.grabber.status
        warnings = []
        if camera_status not in ("ok", "not started"):
            warnings.append(f"camera: {camera_status}")
        if status.startswith(("no face", "engine")):
            warnings.append(status)
        if not loop.animator.calibrated:
            warnings.append("calibrating: look into the camera with a neutral face")
        info = self.info
        avatars = [
            {"index": i, "name": a.name, "face_found": a.face_found}
            for i, a in enumerate(list(loop.avatars))
        ]
        return JSONResponse(
            {
                "avatars": avatars,
                "avatar": loop.avatar_index,
                "fps": fps,
                "stages": stages,
                "frames": frames,
                # frame sent by the loop -> its JPEG ready for the browsers (ms)
                "view_delay_ms": None if delay is None else round(delay, 2),
                "status": status,
                "warnings": warnings,
                "paused": loop.paused,
                "mirror": loop.mirror,
                "best_frame": loop.best_frame,
                "motion_scale": round(loop.motion_scale, 3),
                "motion_smoothing": round(loop.motion_smoothing, 3),
                "label": self.label,
                "engine": info.engine,
                "camera": {**info.camera, "status": camera_status},
                "virtual_camera": info.virtual_camera,
                "uploads": info.avatar_folder is not None,
                "keys": _keys(),
            }
        )

    async def thumb(self, request: Request) -> Response:
        index = request.path_params["index"]
        avatars = list(self.loop.avatars)
        if not 0 <= index < len(avatars):
            return _error(f"there is no avatar {index}", 404)
        avatar = avatars[index]
        key = (index, avatar.name)
        if key not in self._thumbs:
            small = cv2.resize(avatar.image, (128, 128), interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            self._thumbs[key] = data.tobytes() if ok else b""
        return Response(self._thumbs[key], media_type="image/jpeg")

    # --- streams ---------------------------------------------------------------------------

    async def snapshot(self, request: Request) -> Response:
        """The newest frame of a view as one JPEG; X-Avatar-Index: the avatar it came from."""
        view = request.path_params["view"]
        if view not in VIEWS:
            return _error(f"no view {view}: expected one of {', '.join(VIEWS)}", 404)
        after = _int(request.query_params.get("after"), 0)
        found = await run_in_threadpool(self.bridge.next_jpeg, view, after, SNAPSHOT_WAIT)
        if found is None:
            return _error("no frame yet", 503)
        headers = {"X-Avatar-Index": str(found.avatar), "X-Frame": str(found.seq)}
        return Response(found.jpeg, media_type="image/jpeg", headers=headers)

    async def stream(self, request: Request) -> Response:
        view = request.path_params["view"]
        if view not in VIEWS:
            return _error(f"no view {view}: expected one of {', '.join(VIEWS)}", 404)
        return StreamingResponse(
            self._frames(view),
            media_type=f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
            headers={"Cache-Control": "no-store"},
        )

    def _frames(self, view: str) -> Iterator[bytes]:
        """The MJPEG parts (run in Starlette's thread pool; ends when the bridge closes)."""
        seq = 0
        while not self.bridge.closed:
            found = self.bridge.next_jpeg(view, seq, timeout=1.0)
            if found is None:
                continue
            seq = found.seq
            head = (
                f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(found.jpeg)}\r\n\r\n"
            ).encode()
            yield head + found.jpeg + b"\r\n"

    # --- actions ---------------------------------------------------------------------------

    def simple(self, action: Action):
        async def handler(request: Request) -> Response:
            self.loop.post(action)
            return JSONResponse({"ok": True})

        return handler

    def toggle(self, action: Action, attribute: str):
        """A toggle; with ``{"on": true|false}`` only when the state differs."""

        async def handler(request: Request) -> Response:
            body = await _json(request)
            if isinstance(body, Response):
                return body
            wanted = body.get("on") if isinstance(body, dict) else None
            if wanted is not None and not isinstance(wanted, bool):
                return _error('"on" must be true or false', 400)
            if wanted is None or wanted != getattr(self.loop, attribute):
                self.loop.post(action)
            return JSONResponse({"ok": True})

        return handler

    async def select_avatar(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        index = body.get("index") if isinstance(body, dict) else None
        count = len(self.loop.avatars)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            return _error(f'expected {{"index": N}} with N from 0 to {count - 1}', 400)
        self.loop.post(Action.SELECT_AVATAR, index)
        return JSONResponse({"ok": True})

    async def motion(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        expected = 'expected {"scale": X} with X from 0 to 3 and/or {"smoothing": Y} from 0 to 1'
        if not isinstance(body, dict) or not body or set(body) - {"scale", "smoothing"}:
            return _error(expected, 400)
        settings = {}
        for name, (low, high) in (("scale", MOTION_SCALE_RANGE), ("smoothing", SMOOTHING_RANGE)):
            if name not in body:
                continue
            value = body[name]
            if not isinstance(value, int | float) or isinstance(value, bool):
                return _error(expected, 400)
            if not low <= value <= high:  # also refuses NaN
                return _error(expected, 400)
            settings[name] = float(value)
        if "scale" in settings:
            self.loop.post(Action.SET_MOTION_SCALE, settings["scale"])
        if "smoothing" in settings:
            self.loop.post(Action.SET_MOTION_SMOOTHING, settings["smoothing"])
        return JSONResponse({"ok": True})

    async def set_label(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        text = body.get("text") if isinstance(body, dict) else None
        if text is not None and not isinstance(text, str):
            return _error('expected {"text": "..."} or {"text": null}', 400)
        text = text.strip() if text else None
        info = self.info
        try:
            options = replace(info.marking, label=text or None)
        except SettingError as exc:
            return _error(str(exc), 400)
        marker = FrameMarker(options, info.resolution, engine_marks=info.engine_marks)
        self.loop.post(Action.SET_MARKER, marker)
        self.label = options.label
        return JSONResponse({"ok": True, "label": self.label})

    async def upload(self, request: Request) -> Response:
        """The body is the photo itself; ``?name=`` its file name."""
        folder = self.info.avatar_folder
        if folder is None:
            return _error(
                "--avatar is a single photo: start with --avatar FOLDER to add photos.", 409
            )
        name = request.query_params.get("name", "")
        declared = _int(request.headers.get("content-length"), -1)
        if declared > MAX_UPLOAD_BYTES:
            return _error(too_big_message(name), 413)
        if not self._upload_lock.acquire(blocking=False):
            return _error("another photo is being checked: try again in a moment", 429)
        try:
            data = await _read_limited(request, MAX_UPLOAD_BYTES)
            if data is None:
                return _error(too_big_message(name), 413)
            info = self.info
            filename, prepared = await run_in_threadpool(
                check_photo, data, name, info.resolution, info.crop, info.framing
            )
            path = save_photo(folder, filename, data)
        except UploadRefused as exc:
            log.info("photo refused: %s", exc)
            return _error(str(exc), exc.status)
        finally:
            self._upload_lock.release()
        prepared = replace(prepared, name=path.name)
        self.loop.post(Action.ADD_AVATAR, prepared)
        log.info("added the avatar %s", path)
        return JSONResponse({"ok": True, "name": path.name})


def _static(name: str) -> bytes:
    return resources.files("live.ui").joinpath("static", name).read_bytes()


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` bytes (nothing more is read)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> Any:
    """The JSON body ({} when empty), or an error response."""
    if _int(request.headers.get("content-length"), 0) > MAX_JSON_BYTES:
        return _error(f"the request body is larger than {MAX_JSON_BYTES} bytes", 413)
    data = await _read_limited(request, MAX_JSON_BYTES)
    if data is None:
        return _error(f"the request body is larger than {MAX_JSON_BYTES} bytes", 413)
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _error("the request body is not JSON", 400)
