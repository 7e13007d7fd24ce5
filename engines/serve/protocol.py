"""The avatar server's wire protocol: one binary WebSocket message per step, versioned.

Every message is one binary WebSocket message::

    0   4s  magic b"AVCM"
    4   u8  protocol version (PROTOCOL_VERSION)
    5   u8  message type (MessageType)
    6   u16 reserved, 0
    8   u32 sequence number (frames: 0, 1, 2, ...; other messages: 0)
    12  u32 meta length M (at most MAX_META_BYTES)
    16  M   meta: a JSON object; its "parts" list describes the payload
    16+M    payload: the parts' bytes, in order

A part is a named array, sent raw (C-order bytes of ``dtype`` and ``shape``) or as an image
(H x W x 3 uint8) encoded as PNG or JPEG. The receiver says which parts it expects, with their
shapes and dtypes; :func:`decode` checks the header, the sizes, every part's declared shape and
the encoded image's own header (PNG IHDR, JPEG SOF, read as libpng and libjpeg read them:
:mod:`.imageheader`) before decoding anything, and raises
:class:`ProtocolError` with a code the server sends back in an ``ERROR`` message.

A session: the client sends ``HELLO`` (protocol version, token, transport), the server answers
``WELCOME`` (the model's identity and I/O spec) or ``ERROR``; then ``AVATAR`` once per avatar
(answered by ``AVATAR_STATE``: the avatar keypoints), ``MOTION`` once per calibration (no
answer), and one ``FRAME`` per frame (answered by ``RESULT``: the animated frame and the
driving keypoints). This module is pure: no sockets, no Ray.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .imageheader import image_size

PROTOCOL_VERSION = 2  # 2: motion_scale per keypoint (1 x K x 1), motion_jacobian_offset
MAGIC = b"AVCM"
HEADER = struct.Struct("<4sBBHII")  # magic, version, type, reserved, sequence, meta length
MAX_META_BYTES = 64 * 1024  # a meta larger than this is malformed
TRANSPORTS = ("raw", "png", "jpeg")
ENCODINGS = ("raw", "png", "jpeg")


class MessageType(enum.IntEnum):
    HELLO = 1  # client -> server: version, token, transport
    WELCOME = 2  # server -> client: session id, model identity, I/O spec
    AVATAR = 3  # client -> server: the avatar image
    AVATAR_STATE = 4  # server -> client: the avatar keypoints
    MOTION = 5  # client -> server: the motion transfer
    FRAME = 6  # client -> server: one driving crop
    RESULT = 7  # server -> client: the animated frame and driving keypoints
    ERROR = 8  # server -> client: what went wrong; the server then closes the session


class ErrorCode(str, enum.Enum):
    MALFORMED = "malformed"  # not a message of this protocol
    VERSION = "version"  # another protocol version
    TOO_LARGE = "too_large"  # over the size limit
    SHAPE = "shape"  # a part with the wrong name, shape or dtype
    ORDER = "out_of_order"  # a message the session does not expect now
    UNAUTHORIZED = "unauthorized"  # missing or wrong token
    FULL = "full"  # the server has no room for another session
    MODEL = "model"  # the client expects another model
    RATE = "rate_limited"  # a message sent more often than the server allows
    TIMEOUT = "timeout"  # the client sent nothing (HELLO, the next message) in time
    INTERNAL = "internal"  # the server failed


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is sent back to the peer."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code  # machine-readable reason
        self.message = message  # what happened and what to do


@dataclass(frozen=True)
class PartSpec:
    """What the receiver accepts for one named part."""

    shape: tuple[int, ...]  # exact shape
    dtype: str = "float32"  # numpy dtype name
    image: bool = False  # H x W x 3 uint8 that may come PNG/JPEG-encoded


@dataclass(frozen=True)
class Message:
    """One decoded message."""

    type: MessageType  # what it is
    seq: int = 0  # frame sequence number
    meta: dict[str, Any] = field(default_factory=dict)  # JSON fields (without "parts")
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # decoded arrays by name


# --- encoding ------------------------------------------------------------------------------------


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 90) -> bytes:
    """H x W x 3 uint8 RGB -> bytes (raw C-order, PNG or JPEG)."""
    if encoding == "raw":
        return np.ascontiguousarray(image, np.uint8).tobytes()
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if encoding == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f"unknown image encoding {encoding!r}: expected one of {ENCODINGS}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {encoding}")
    return data.tobytes()


def encode(
    kind: MessageType,
    meta: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    images: Mapping[str, tuple[np.ndarray, str]] | None = None,
    *,
    seq: int = 0,
    jpeg_quality: int = 90,
) -> bytes:
    """One message: ``arrays`` are sent raw; ``images`` as (image, encoding) pairs."""
    parts: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in (arrays or {}).items():
        data = np.ascontiguousarray(array).tobytes()
        parts.append(_part(name, array.shape, str(array.dtype), "raw", len(data)))
        chunks.append(data)
    for name, (image, encoding) in (images or {}).items():
        data = encode_image(image, encoding, jpeg_quality)
        parts.append(_part(name, image.shape, "uint8", encoding, len(data)))
        chunks.append(data)
    body = dict(meta or {})
    body["parts"] = parts
    meta_bytes = json.dumps(body, separators=(",", ":")).encode()
    if len(meta_bytes) > MAX_META_BYTES:
        raise ValueError(f"message meta of {len(meta_bytes)} bytes is over {MAX_META_BYTES}")
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(kind), 0, seq, len(meta_bytes))
    return b"".join([header, meta_bytes, *chunks])


def _part(name: str, shape: tuple[int, ...], dtype: str, encoding: str, nbytes: int) -> dict:
    return {
        "name": name,
        "shape": [int(s) for s in shape],
        "dtype": dtype,
        "encoding": encoding,
        "nbytes": nbytes,
    }


def error_message(code: ErrorCode, message: str) -> bytes:
    return encode(MessageType.ERROR, {"code": code.value, "message": message})


# --- decoding ------------------------------------------------------------------------------------


def peek_type(data: bytes) -> MessageType:
    """The message type from the header alone (checks magic and version)."""
    return _header(data)[0]


def _header(data: bytes) -> tuple[MessageType, int, int]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(ErrorCode.MALFORMED, "expected a binary message, got text")
    if len(data) < HEADER.size:
        raise ProtocolError(ErrorCode.MALFORMED, f"message of {len(data)} bytes has no header")
    magic, version, kind, _, seq, meta_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.MALFORMED, "not an avatarcam message (bad magic)")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.VERSION,
            f"protocol version {version}; this side speaks {PROTOCOL_VERSION}: update the "
            "client and server to the same avatarcam release",
        )
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown message type {kind}") from None
    if meta_len > MAX_META_BYTES or HEADER.size + meta_len > len(data):
        raise ProtocolError(ErrorCode.MALFORMED, f"meta length {meta_len} does not fit")
    return message_type, seq, meta_len


def decode(
    data: bytes,
    expect: Mapping[str, PartSpec] | None = None,
    *,
    max_bytes: int | None = None,
) -> Message:
    """Check and decode one message; ``expect`` names every part it must carry.

    Sizes, names, shapes and dtypes are checked before any payload is decoded.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"message of {len(data)} bytes is over the {max_bytes} limit: send one frame of "
            "the model's size (WELCOME: model.resolution, max_message_bytes) per message",
        )
    kind, seq, meta_len = _header(data)
    try:
        meta = json.loads(bytes(data[HEADER.size : HEADER.size + meta_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"meta is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.MALFORMED, "meta is nested too deeply") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("parts", []), list):
        raise ProtocolError(ErrorCode.MALFORMED, "meta must be a JSON object with a parts list")
    declared = meta.pop("parts", [])
    expect = expect or {}
    names = [p.get("name") if isinstance(p, dict) else None for p in declared]
    if (
        not all(isinstance(n, str) for n in names)
        or sorted(names) != sorted(expect)
        or len(set(names)) != len(names)
    ):
        raise ProtocolError(
            ErrorCode.SHAPE,
            f"{kind.name} carries parts {names}, expected {sorted(expect)}",
        )
    offset = HEADER.size + meta_len
    slices: list[tuple[dict, PartSpec, int]] = []
    for part in declared:
        spec = expect[part["name"]]
        _check_part(kind, part, spec)
        slices.append((part, spec, offset))
        offset += part["nbytes"]
    if offset != len(data):
        raise ProtocolError(
            ErrorCode.MALFORMED,
            f"{kind.name} parts declare {offset - HEADER.size - meta_len} payload bytes, "
            f"the message has {len(data) - HEADER.size - meta_len}",
        )
    view = memoryview(data)
    parts = {}
    for part, spec, start in slices:
        chunk = view[start : start + part["nbytes"]]
        parts[part["name"]] = _decode_part(kind, part, spec, chunk)
    return Message(kind, seq, meta, parts)


def _check_part(kind: MessageType, part: dict, spec: PartSpec) -> None:
    name = part["name"]
    shape = part.get("shape")
    encoding = part.get("encoding")
    nbytes = part.get("nbytes")
    if not isinstance(shape, list) or tuple(shape) != spec.shape:
        raise ProtocolError(
            ErrorCode.SHAPE, f"{kind.name} part '{name}' has shape {shape}, expected {spec.shape}"
        )
    if part.get("dtype") != spec.dtype:
        raise ProtocolError(
            ErrorCode.SHAPE,
            f"{kind.name} part '{name}' has dtype {part.get('dtype')}, expected {spec.dtype}",
        )
    if encoding not in ENCODINGS or (encoding != "raw" and not spec.image):
        raise ProtocolError(
            ErrorCode.MALFORMED, f"{kind.name} part '{name}' has encoding {encoding!r}"
        )
    raw_size = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ProtocolError(ErrorCode.MALFORMED, f"{kind.name} part '{name}' has no byte size")
    if encoding == "raw" and nbytes != raw_size:
        raise ProtocolError(
            ErrorCode.SHAPE,
            f"{kind.name} part '{name}' has {nbytes} raw bytes, expected {raw_size}",
        )
    # An encoded image is never much larger than its raw pixels (PNG stores at worst about
    # raw + a small overhead per row; JPEG at quality 100 stays well below).
    if encoding != "raw" and nbytes > raw_size + 4096 + 16 * spec.shape[0]:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"{kind.name} part '{name}' is {nbytes} bytes encoded"
        )


def _decode_part(kind: MessageType, part: dict, spec: PartSpec, chunk: memoryview) -> np.ndarray:
    name, encoding = part["name"], part["encoding"]
    if encoding == "raw":
        return np.frombuffer(chunk, dtype=spec.dtype).reshape(spec.shape).copy()
    data = bytes(chunk)
    try:
        size = image_size(data, encoding)
    except ValueError as exc:
        raise ProtocolError(
            ErrorCode.MALFORMED, f"{kind.name} part '{name}' is not a plain {encoding}: {exc}"
        ) from None
    if size != (spec.shape[1], spec.shape[0]):
        raise ProtocolError(
            ErrorCode.SHAPE,
            f"{kind.name} part '{name}': the {encoding} image is {size[0]}x{size[1]}, expected "
            f"{spec.shape[1]}x{spec.shape[0]}",
        )
    import cv2

    # The header checked above is the one the decoder allocates for (engines.serve.imageheader);
    # EXIF orientation is ignored so that the pixels are the ones sent.
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.shape != spec.shape:
        raise ProtocolError(ErrorCode.MALFORMED, f"{kind.name} part '{name}' does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def error_from(message: Message) -> ProtocolError:
    """The :class:`ProtocolError` an ``ERROR`` message carries."""
    try:
        code = ErrorCode(message.meta.get("code"))
    except ValueError:
        code = ErrorCode.INTERNAL
    return ProtocolError(code, str(message.meta.get("message", "the server reported an error")))
