"""One client's session on a replica: the protocol's state machine, independent of the transport.

``HELLO`` first (version, token, transport; the replica may refuse a session when full), then
``AVATAR`` before any ``FRAME``, frames numbered 0, 1, 2, ... Anything else is an error that
ends this session only. The replica's WebSocket handler feeds received bytes to
:meth:`Session.handle` and sends what it returns.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

import numpy as np

from export.iospec import AVATAR_JACOBIAN, AVATAR_KP, MOTION_INPUTS

from .identity import io_to_json
from .protocol import (
    PROTOCOL_VERSION,
    TRANSPORTS,
    ErrorCode,
    MessageType,
    PartSpec,
    ProtocolError,
    decode,
    encode,
    peek_type,
)
from .runner import BatchRunner, FrameJob, FrameOutput, SessionState, finalize_frame

#: Client messages besides the frames' payload: hello, avatar, motion and their headers.
_META_ALLOWANCE = 64 * 1024
#: AVATAR rate limit: a burst of this many, then one per AVATAR_EVERY_S (each runs the avatar
#: graph on the replica's engine, between other sessions' frames).
AVATAR_BURST = 4
AVATAR_EVERY_S = 2.0


def max_message_bytes(resolution: int) -> int:
    """The largest client message a replica accepts: one raw frame and its meta."""
    return resolution * resolution * 3 + _META_ALLOWANCE


class Session:
    """The state of one stream: handshake, avatar, motion and the next frame number."""

    def __init__(
        self,
        runner: BatchRunner,
        token: str | None,
        animate: Callable[[FrameJob], Awaitable[FrameOutput]],
        admit: Callable[[], None] = lambda: None,
        session_id: str = "",
    ):
        self.runner = runner  # the replica's engines
        self.token = token  # the secret clients must present; None: open
        self.animate = animate  # batches this frame with other sessions' frames
        self.admit = admit  # raises ProtocolError(FULL) when the replica has no room
        self.session_id = session_id  # shown in WELCOME and the server log
        self.ready = False  # hello accepted
        self.transport = "png"  # how result frames are encoded
        self.jpeg_quality = 90  # for the jpeg transport
        self.frames = 0  # frames animated
        self.last_frame = float("-inf")  # time.monotonic() of the latest FRAME received
        self._avatar_tokens = float(AVATAR_BURST)
        self._avatar_refilled = time.monotonic()
        self._state: SessionState | None = None
        self._next_seq = 0
        io = runner.io
        size = io.resolution
        self._max_bytes = max_message_bytes(size)
        self._image = {"avatar": PartSpec((size, size, 3), "uint8", image=True)}
        self._driving = {"driving": PartSpec((size, size, 3), "uint8", image=True)}
        self._motion = {
            name: PartSpec(io.frame.tensor(name).shape)
            for name in MOTION_INPUTS
            if name in io.frame.input_names
        }

    async def handle(self, data: bytes) -> bytes | None:
        """Process one client message; returns the reply (or None). Raises ProtocolError."""
        kind = peek_type(data)
        if not self.ready and kind is not MessageType.HELLO:
            raise ProtocolError(ErrorCode.ORDER, f"{kind.name} before HELLO: send HELLO first")
        if kind is MessageType.HELLO:
            return self._hello(data)
        if kind is MessageType.AVATAR:
            return await self._avatar(data)
        if kind is MessageType.MOTION:
            return self._motion_update(data)
        if kind is MessageType.FRAME:
            return await self._frame(data)
        raise ProtocolError(ErrorCode.ORDER, f"a client does not send {kind.name}")

    def _hello(self, data: bytes) -> bytes:
        if self.ready:
            raise ProtocolError(ErrorCode.ORDER, "HELLO sent twice in one session")
        message = decode(data, max_bytes=_META_ALLOWANCE)
        meta = message.meta
        if self.token is not None:
            given = meta.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(
                given.encode(), self.token.encode()
            ):
                raise ProtocolError(
                    ErrorCode.UNAUTHORIZED,
                    "this server needs a token and the one sent is "
                    + ("missing" if given is None else "wrong")
                    + ": pass the server's --token value with --server-token",
                )
        transport = meta.get("transport", "png")
        quality = meta.get("jpeg_quality", 90)
        if transport not in TRANSPORTS:
            raise ProtocolError(
                ErrorCode.MALFORMED, f"transport {transport!r}: expected one of {TRANSPORTS}"
            )
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ProtocolError(ErrorCode.MALFORMED, f"jpeg_quality {quality!r}: expected 1-100")
        self.admit()
        self.transport, self.jpeg_quality = transport, quality
        self.ready = True
        return encode(
            MessageType.WELCOME,
            {
                "protocol": PROTOCOL_VERSION,
                "session": self.session_id,
                "model": self.runner.identity.to_json(),
                "io": io_to_json(self.runner.io),
                "max_message_bytes": self._max_bytes,
            },
        )

    def _take_avatar_token(self) -> None:
        now = time.monotonic()
        self._avatar_tokens = min(
            AVATAR_BURST, self._avatar_tokens + (now - self._avatar_refilled) / AVATAR_EVERY_S
        )
        self._avatar_refilled = now
        if self._avatar_tokens < 1:
            raise ProtocolError(
                ErrorCode.RATE,
                f"more than {AVATAR_BURST} avatars in a row (then one per {AVATAR_EVERY_S:g} s): "
                "send AVATAR only when the avatar changes",
            )
        self._avatar_tokens -= 1

    async def _avatar(self, data: bytes) -> bytes:
        self._take_avatar_token()
        # Decoding an image takes a while: off the event loop, so other sessions go on.
        message = await asyncio.to_thread(decode, data, self._image, max_bytes=self._max_bytes)
        self._state = await asyncio.to_thread(self.runner.encode_avatar, message.parts["avatar"])
        arrays = {AVATAR_KP: self._state.avatar[AVATAR_KP]}
        if AVATAR_JACOBIAN in self._state.avatar:
            arrays[AVATAR_JACOBIAN] = self._state.avatar[AVATAR_JACOBIAN]
        return encode(MessageType.AVATAR_STATE, arrays=arrays)

    def _motion_update(self, data: bytes) -> None:
        if self._state is None:
            raise ProtocolError(ErrorCode.ORDER, "MOTION before AVATAR: send the avatar first")
        message = decode(data, self._motion, max_bytes=_META_ALLOWANCE)
        for name, value in message.parts.items():
            if not np.all(np.isfinite(value)):
                raise ProtocolError(ErrorCode.MALFORMED, f"MOTION part '{name}' is not finite")
        self._state.motion = message.parts
        return None

    async def _frame(self, data: bytes) -> bytes:
        if self._state is None:
            raise ProtocolError(ErrorCode.ORDER, "FRAME before AVATAR: send the avatar first")
        self.last_frame = time.monotonic()
        message = await asyncio.to_thread(decode, data, self._driving, max_bytes=self._max_bytes)
        if message.seq != self._next_seq:
            raise ProtocolError(
                ErrorCode.ORDER, f"frame {message.seq} out of order: expected {self._next_seq}"
            )
        self._next_seq += 1
        output = await self.animate(FrameJob(self._state, message.parts["driving"]))
        self.frames += 1
        return await asyncio.to_thread(self._result, message.seq, output)

    def _result(self, seq: int, output: FrameOutput) -> bytes:
        image = finalize_frame(output.prediction)
        arrays = {"driving_kp": output.driving_kp}
        if output.driving_jacobian is not None:
            arrays["driving_jacobian"] = output.driving_jacobian
        return encode(
            MessageType.RESULT,
            arrays=arrays,
            images={"prediction": (image, self.transport)},
            seq=seq,
            jpeg_quality=self.jpeg_quality,
        )
