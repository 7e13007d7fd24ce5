"""The ``remote`` backend: the session API of :class:`~engines.base.Engine` served by an
avatarcam server (``python -m engines.serve``) over one WebSocket.

The avatar goes to the server once per avatar, the motion transfer once per calibration, then
one message per frame: the driving crop out, the animated frame and the driving keypoints back.
Frames travel as H x W x 3 uint8 (raw, PNG or JPEG), so a lossless transport reproduces a local
engine's output exactly after its own rounding to 8 bits. ``last_rtt_ms`` is the round trip of
the latest frame.

When the server goes away: with ``reconnect`` (live runs) :meth:`animate` raises
:class:`~engines.errors.EngineUnavailable` at once while it reconnects with back-off (0.5 s,
1 s, 2 s, ... 8 s), re-sending the avatar and the motion when it is back; without it (offline
runs) it raises :class:`ServerError`, so the run stops with what it wrote so far.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from export.errors import missing_dependency
from export.iospec import AVATAR_JACOBIAN, AVATAR_KP, GraphSpec
from export.motion import MotionTransfer

from .base import Engine, FrameResult, KeypointArrays
from .errors import EngineError, EngineUnavailable
from .frames import output_to_image
from .options import TRANSPORTS, RemoteOptions
from .serve.identity import ModelIdentity, io_from_json
from .serve.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    MessageType,
    PartSpec,
    ProtocolError,
    decode,
    encode,
    error_from,
    peek_type,
)
from .serve.runner import motion_arrays

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits between reconnection attempts
MAX_RETRY_AFTER_S = 300.0  # the longest Retry-After a reconnection honours


class ServerError(EngineError):
    """The server broke the protocol or went away during a run (what was written is kept)."""

    exit_code = 4


class ServerRefused(ServerError):
    """Nothing ran: no server there, not an avatarcam stream, or the server refused the
    session (token, full, version). Exit status 2, as for other set-up errors."""

    exit_code = 2

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the server's Retry-After; a reconnection waits it


class ModelChanged(ServerRefused):
    """After a reconnection the server runs another model than the one this run calibrated
    with; the run stops instead of animating with the wrong model."""

    code = ErrorCode.MODEL


class RemoteEngine(Engine):
    """Animates on an avatarcam server; ``run()`` of single graphs is not offered remotely."""

    backend = "remote"
    marks_frames = True  # the server watermarks every frame it returns (engines.serve.runner)

    def __init__(self, options: RemoteOptions):
        if options.transport not in TRANSPORTS:
            raise EngineError(
                f"unknown transport {options.transport!r}: expected one of {TRANSPORTS}"
            )
        if not 1 <= options.jpeg_quality <= 100:
            raise EngineError(f"--jpeg-quality {options.jpeg_quality}: expected 1 to 100")
        if not options.url.startswith(("ws://", "wss://")):
            raise EngineError(
                f"--server {options.url!r} is not a WebSocket URL: expected ws://HOST:PORT "
                "(or wss:// behind a TLS proxy), as printed by the server at start"
            )
        self.options = options
        self.last_rtt_ms: float | None = None  # round trip of the latest frame
        self.status = "connecting"  # connection state, for the preview
        self._socket: Any = None
        self._seq = 0
        self._avatar: np.ndarray | None = None  # the last avatar sent (re-sent on reconnect)
        self._motion: dict[str, np.ndarray] | None = None  # the last motion sent
        self._attempt = 0
        self._retry_at = 0.0
        self._stopped: ModelChanged | None = None  # set when a reconnection found another model
        try:
            welcome = self._connect()
        except BaseException:
            self._drop()
            raise
        self.identity = ModelIdentity.from_json(welcome["model"])  # what the server runs
        self.session = str(welcome.get("session", ""))  # the server's name for this session
        io = io_from_json(welcome["io"])
        super().__init__(io, self.identity.precision, options.url)
        self.selection_reason = (
            f"remote on {options.url}, requested: {self.identity.describe()}; "
            f"{options.transport} transport"
        )
        size = io.resolution
        self._result_spec = {
            "prediction": PartSpec((size, size, 3), "uint8", image=True),
            "driving_kp": PartSpec((1, io.num_kp, 2)),
        }
        self._avatar_spec = {AVATAR_KP: PartSpec((1, io.num_kp, 2))}
        if io.jacobian:
            self._result_spec["driving_jacobian"] = PartSpec((1, io.num_kp, 2, 2))
            self._avatar_spec[AVATAR_JACOBIAN] = PartSpec((1, io.num_kp, 2, 2))
        self._input = np.empty((size, size, 3), np.uint8)  # reused driving crop buffer
        self._scratch = np.empty((size, size, 3), np.float32)  # reused conversion buffer
        self._prediction = np.empty((1, 3, size, size), np.float32)  # reused result buffer

    def describe(self) -> str:
        return f"remote ({self.options.url}: {self.identity.describe()})"

    # --- connection ----------------------------------------------------------------------------

    def _connect(self) -> dict[str, Any]:
        try:
            from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
            from websockets.sync.client import connect
        except ImportError:
            raise missing_dependency("websockets", "serve", "the remote backend") from None
        from .serve.settings import STREAM_PATH

        url = self.options.url.rstrip("/")
        if not url.endswith(STREAM_PATH):
            url += STREAM_PATH
        address = self.options.source_address
        source = {"source_address": (address, 0)} if address else {}
        try:
            # Entered as a context manager (websockets' supported form); _drop exits it.
            self._socket = connect(
                url,
                open_timeout=self.options.timeout_s,
                close_timeout=1,
                compression=None,
                proxy=None,
                max_size=None,
                **source,
            ).__enter__()
        except InvalidURI as exc:
            raise EngineError(f"--server {self.options.url!r}: {exc}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 429:  # the server's front end refused this client (PROTOCOL.md)
                retry = exc.response.headers.get("Retry-After", "")
                wait = min(float(retry), MAX_RETRY_AFTER_S) if retry.isdigit() else 0.0
                raise ServerRefused(_denial(self.options.url, exc.response), wait) from None
            raise ServerRefused(
                f"{url} answered HTTP {status}, not an avatarcam stream: pass the URL the "
                "server printed at start (ws://HOST:PORT, without a path)"
                if status in (403, 404)
                else f"{url} refused the WebSocket (HTTP {status}): check --server"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ServerRefused(
                f"could not connect to the avatar server at {self.options.url} ({exc}). Check "
                "that it runs (python -m engines.serve prints its URL), the host and port, and "
                "any firewall between here and there."
            ) from None
        hello = {
            "client": "avatarcam",
            "transport": self.options.transport,
            "jpeg_quality": self.options.jpeg_quality,
        }
        if self.options.token is not None:
            hello["token"] = self.options.token
        try:
            reply = self._request(encode(MessageType.HELLO, hello), MessageType.WELCOME, {})
        except ServerRefused:
            raise
        except ServerError as exc:  # an ERROR reply (or none) to HELLO: nothing ran
            raise ServerRefused(str(exc)) from None
        if reply.meta.get("protocol") != PROTOCOL_VERSION:
            raise ServerRefused(
                f"the server speaks protocol {reply.meta.get('protocol')}, this client "
                f"{PROTOCOL_VERSION}: install the same avatarcam release on both"
            )
        self.status = "connected"
        return reply.meta

    def _request(self, data: bytes, expect: MessageType | None, spec: Mapping[str, PartSpec]):
        """Send a message and, for ``expect``, wait for that reply; errors as ServerError."""
        from websockets.exceptions import ConnectionClosed

        try:
            self._socket.send(data)
            if expect is None:
                return None
            reply = self._socket.recv(timeout=self.options.timeout_s)
        except ConnectionClosed as exc:
            raise ServerError(self._closed_message(exc)) from None
        except TimeoutError:
            raise ServerError(
                f"the avatar server at {self.options.url} did not answer within "
                f"{self.options.timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise ServerError(f"lost the avatar server at {self.options.url}: {exc}") from None
        try:
            if peek_type(reply) is MessageType.ERROR:
                raise self._refused(error_from(decode(reply, {})))
            message = decode(reply, spec)
        except ProtocolError as exc:
            raise ServerError(f"the avatar server sent a bad reply: {exc}") from None
        if message.type is not expect:
            raise ServerError(f"the avatar server sent {message.type.name}, expected {expect.name}")
        return message

    def _closed_message(self, exc: Exception) -> str:
        return (
            f"the avatar server at {self.options.url} closed the connection ({exc}); it may "
            "have stopped or restarted"
        )

    def _refused(self, error: ProtocolError) -> ServerError:
        what = {
            ErrorCode.UNAUTHORIZED: "refused the session",
            ErrorCode.FULL: "is full",
        }.get(error.code, "reported an error")
        return ServerError(f"the avatar server at {self.options.url} {what}: {error.message}")

    def _drop(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:  # already broken: nothing left to close cleanly
                log.debug("closing a broken connection failed", exc_info=True)
            self._socket = None

    def _lost(self, exc: ServerError) -> EngineUnavailable:
        """Live runs: note the loss and schedule a reconnection."""
        self._drop()
        wait = BACKOFF_S[min(self._attempt, len(BACKOFF_S) - 1)]
        asked = exc.retry_after_s if isinstance(exc, ServerRefused) else 0.0
        wait = max(wait, asked)  # at least as long as the server asked (HTTP 429 Retry-After)
        self._attempt += 1
        self._retry_at = time.monotonic() + wait
        what = "server asked to wait" if asked else "server lost"
        self.status = f"{what}, reconnecting in {wait:g} s (attempt {self._attempt})"
        log.warning("%s; %s", exc, self.status)
        return EngineUnavailable(self.status)

    def _ensure_connected(self) -> None:
        if self._stopped is not None:
            raise self._stopped
        if self._socket is not None:
            return
        if not self.options.reconnect:
            raise ServerError(f"not connected to the avatar server at {self.options.url}")
        if time.monotonic() < self._retry_at:
            raise EngineUnavailable(self.status)
        try:
            welcome = self._connect()
            self._check_same_model(welcome)
            if self._avatar is not None:
                self._send_avatar(self._avatar)
            if self._motion is not None:
                self._request(encode(MessageType.MOTION, arrays=self._motion), None, {})
        except ModelChanged as exc:
            self._drop()
            self.status = "stopped: the server runs another model"
            self._stopped = exc
            raise
        except ServerError as exc:
            raise self._lost(exc) from None
        self._seq = 0
        self._attempt = 0
        log.info("reconnected to the avatar server at %s", self.options.url)

    def _check_same_model(self, welcome: dict[str, Any]) -> None:
        """A reconnection must find the model this run calibrated with."""
        try:
            identity = ModelIdentity.from_json(welcome["model"])
            same_io = io_from_json(welcome["io"]) == self.io
        except (KeyError, TypeError, ValueError):
            identity, same_io = None, False
        if identity != self.identity or not same_io:
            now = identity.describe() if identity is not None else "an unreadable model"
            raise ModelChanged(
                f"the avatar server at {self.options.url} came back with another model "
                f"(before: {self.identity.describe()}; now: {now}); its keypoints and "
                "calibration do not carry over, so the run stops: start it again to use the "
                "new model"
            )

    def _call(self, function, *args):
        """Run a request; in live runs a lost server becomes EngineUnavailable."""
        self._check_open()
        self._ensure_connected()
        try:
            return function(*args)
        except ServerError as exc:
            if not self.options.reconnect or self._socket is None:
                raise
            raise self._lost(exc) from None

    # --- the Engine interface --------------------------------------------------------------------

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        raise EngineError("the remote backend runs whole sessions: use set_avatar/animate")

    def _to_host(self, name: str, handle: Any) -> np.ndarray:
        raise EngineError("the remote backend runs whole sessions: use set_avatar/animate")

    def _execute(self, graph: GraphSpec, feeds: Mapping[str, Any]) -> dict[str, Any]:
        raise EngineError(
            "the remote backend does not run single graphs; use set_avatar/set_motion/animate"
        )

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run_once(self.io.graph(graph), feeds)

    def _run_once(self, graph: GraphSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise EngineError(
            "the remote backend does not run single graphs; use set_avatar/set_motion/animate "
            "(or a local --backend for graph-level runs)"
        )

    def _release(self) -> None:
        self._drop()
        self.status = "closed"

    def set_avatar(self, avatar: np.ndarray) -> KeypointArrays:
        image = output_to_image(self._check_array(self.io.avatar, "avatar", avatar))
        self._motion = None
        result = self._call(self._send_avatar, image)
        self._avatar = image
        self._avatar_set = True
        return result

    def _send_avatar(self, image: np.ndarray) -> KeypointArrays:
        # The avatar is sent losslessly whatever the frame transport.
        encoding = "raw" if self.options.transport == "raw" else "png"
        data = encode(MessageType.AVATAR, images={"avatar": (image, encoding)})
        reply = self._request(data, MessageType.AVATAR_STATE, self._avatar_spec)
        return KeypointArrays(reply.parts[AVATAR_KP], reply.parts.get(AVATAR_JACOBIAN))

    def set_motion(self, motion: MotionTransfer) -> None:
        self._check_open()
        if self.io.jacobian and motion.jacobian is None:
            raise EngineError("this model has jacobians; the motion transfer has none")
        arrays = motion_arrays(motion)
        for name, value in arrays.items():
            self._check_array(self.io.frame, name, value)
        self._motion = arrays
        self._call(self._request, encode(MessageType.MOTION, arrays=arrays), None, {})

    def animate(self, driving: np.ndarray) -> FrameResult:
        self._check_open()
        if not self._avatar_set:
            raise EngineError("call set_avatar() before animate()")
        checked = self._check_array(self.io.frame, "driving", driving)
        image = output_to_image(checked, self._input, self._scratch)
        return self._call(self._animate, image)

    def _animate(self, image: np.ndarray) -> FrameResult:
        began = time.perf_counter()
        data = encode(
            MessageType.FRAME,
            images={"driving": (image, self.options.transport)},
            seq=self._seq,
            jpeg_quality=self.options.jpeg_quality,
        )
        reply = self._request(data, MessageType.RESULT, self._result_spec)
        if reply.seq != self._seq:
            raise ServerError(f"the server answered frame {reply.seq}, expected {self._seq}")
        self._seq += 1
        self.last_rtt_ms = (time.perf_counter() - began) * 1000
        prediction = np.divide(
            reply.parts["prediction"].transpose(2, 0, 1)[None],
            np.float32(255),
            out=self._prediction,
            casting="unsafe",
        )
        return FrameResult(
            prediction=prediction,
            driving=KeypointArrays(reply.parts["driving_kp"], reply.parts.get("driving_jacobian")),
        )


def connect(options: RemoteOptions) -> RemoteEngine:
    """Connect to the avatar server ``options.url`` and open a session."""
    engine = RemoteEngine(options)
    log.info("engine: %s", engine.selection_reason)
    return engine


def _denial(url: str, response: Any) -> str:
    """What an HTTP 429 answer to the WebSocket upgrade says: the JSON body's message."""
    body = bytes(response.body or b"")[:4096]
    retry = response.headers.get("Retry-After", "")
    try:
        message = str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        message = "too many connections from this address"
    after = f" (retry after {retry} s)" if retry.isdigit() else ""
    return f"the avatar server at {url} refused the connection{after}: {message}"
