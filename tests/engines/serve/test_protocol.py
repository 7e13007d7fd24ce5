"""The wire protocol without sockets or Ray: round trips, and every check before decoding."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engines.serve.protocol import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    ErrorCode,
    MessageType,
    PartSpec,
    ProtocolError,
    decode,
    encode,
    encode_image,
    error_from,
    error_message,
    peek_type,
)

SIZE = 32
IMAGE = PartSpec((SIZE, SIZE, 3), "uint8", image=True)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_lossless_round_trip(encoding: str) -> None:
    image = _image()
    kp = np.random.default_rng(1).random((1, 5, 2), dtype=np.float32)
    data = encode(
        MessageType.RESULT,
        {"note": "x"},
        arrays={"driving_kp": kp},
        images={"prediction": (image, encoding)},
        seq=7,
    )
    message = decode(data, {"prediction": IMAGE, "driving_kp": PartSpec((1, 5, 2))})
    assert message.type is MessageType.RESULT and message.seq == 7
    assert message.meta == {"note": "x"}
    np.testing.assert_array_equal(message.parts["prediction"], image)
    np.testing.assert_array_equal(message.parts["driving_kp"], kp)


def test_jpeg_round_trip_is_close_and_quality_matters() -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    image[8:24, 8:24] = (200, 40, 90)
    low = encode(MessageType.FRAME, images={"driving": (image, "jpeg")}, jpeg_quality=10)
    high = encode(MessageType.FRAME, images={"driving": (image, "jpeg")}, jpeg_quality=95)
    assert len(low) < len(high)
    decoded = decode(high, {"driving": IMAGE}).parts["driving"]
    assert np.abs(decoded.astype(int) - image).mean() < 3


def _expect_error(data: bytes, code: ErrorCode, expect=None, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, expect if expect is not None else {"driving": IMAGE}, **kwargs)
    assert info.value.code is code, info.value.message
    return info.value


def test_bad_headers_are_rejected() -> None:
    good = encode(MessageType.FRAME, images={"driving": (_image(), "raw")})
    _expect_error(b"short", ErrorCode.MALFORMED)
    _expect_error(b"XXXX" + good[4:], ErrorCode.MALFORMED)
    _expect_error(good[:4] + bytes([99]) + good[5:], ErrorCode.VERSION)
    _expect_error(good[:5] + bytes([77]) + good[6:], ErrorCode.MALFORMED)
    _expect_error(good[:-1], ErrorCode.MALFORMED)  # payload shorter than declared
    _expect_error(good + b"x", ErrorCode.MALFORMED)  # trailing bytes
    with pytest.raises(ProtocolError):
        peek_type("text")  # type: ignore[arg-type]


def test_meta_must_be_a_json_object() -> None:
    meta = b"[1, 2]"
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(MessageType.FRAME), 0, 0, len(meta)) + meta
    _expect_error(data, ErrorCode.MALFORMED)
    meta = b"{not json"
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(MessageType.FRAME), 0, 0, len(meta)) + meta
    _expect_error(data, ErrorCode.MALFORMED)


def test_oversized_message_is_rejected_before_parsing() -> None:
    data = encode(MessageType.FRAME, images={"driving": (_image(), "raw")})
    _expect_error(data, ErrorCode.TOO_LARGE, max_bytes=len(data) - 1)


def test_wrong_parts_shapes_and_dtypes_are_rejected() -> None:
    small = np.zeros((16, 16, 3), np.uint8)
    _expect_error(encode(MessageType.FRAME, images={"driving": (small, "raw")}), ErrorCode.SHAPE)
    _expect_error(encode(MessageType.FRAME, images={"other": (_image(), "raw")}), ErrorCode.SHAPE)
    _expect_error(encode(MessageType.FRAME), ErrorCode.SHAPE)  # missing part
    floats = np.zeros((SIZE, SIZE, 3), np.float32)
    _expect_error(encode(MessageType.FRAME, arrays={"driving": floats}), ErrorCode.SHAPE)
    # An encoding the receiver does not allow for a plain array.
    png = encode(MessageType.MOTION, images={"m": (_image(), "png")})
    _expect_error(png, ErrorCode.MALFORMED, {"m": PartSpec((SIZE, SIZE, 3), "uint8")})


def _forge(meta: dict, payload: bytes, kind: MessageType = MessageType.FRAME) -> bytes:
    body = json.dumps(meta).encode()
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(kind), 0, 0, len(body)) + body + payload


def test_declared_shape_is_checked_against_the_encoded_image_before_decoding() -> None:
    # The meta claims 32x32 but the PNG holds 16x16: rejected from the PNG header.
    png = encode_image(np.zeros((16, 16, 3), np.uint8), "png")
    part = {"name": "driving", "shape": [32, 32, 3], "dtype": "uint8", "encoding": "png"}
    data = _forge({"parts": [{**part, "nbytes": len(png)}]}, png)
    error = _expect_error(data, ErrorCode.SHAPE)
    assert "16x16" in error.message
    # A raw part whose byte count does not match its shape.
    raw = {**part, "encoding": "raw", "nbytes": 10}
    _expect_error(_forge({"parts": [raw]}, b"x" * 10), ErrorCode.SHAPE)
    # An "image" far larger than its raw pixels could ever encode to.
    huge = {**part, "nbytes": 10 * SIZE * SIZE * 3}
    _expect_error(_forge({"parts": [huge]}, b"x" * huge["nbytes"]), ErrorCode.TOO_LARGE)
    # Garbage behind a valid-looking PNG header does not decode.
    fake = png[:33] + b"\x00" * 40
    bad = {**part, "shape": [16, 16, 3], "nbytes": len(fake)}
    _expect_error(
        _forge({"parts": [bad]}, fake),
        ErrorCode.MALFORMED,
        {"driving": PartSpec((16, 16, 3), "uint8", image=True)},
    )
    # Duplicated part names.
    twice = {**part, "encoding": "raw", "nbytes": SIZE * SIZE * 3}
    _expect_error(
        _forge({"parts": [twice, twice]}, b"\x00" * (2 * twice["nbytes"])), ErrorCode.SHAPE
    )


def test_error_messages_round_trip() -> None:
    data = error_message(ErrorCode.FULL, "the server is full")
    assert peek_type(data) is MessageType.ERROR
    error = error_from(decode(data, {}))
    assert error.code is ErrorCode.FULL and error.message == "the server is full"


def test_header_layout_is_stable() -> None:
    data = encode(MessageType.HELLO, {"transport": "png"}, seq=3)
    magic, version, kind, reserved, seq, meta_len = struct.unpack_from("<4sBBHII", data)
    assert (magic, version, kind, reserved, seq) == (b"AVCM", PROTOCOL_VERSION, 1, 0, 3)
    assert json.loads(data[16 : 16 + meta_len]) == {"transport": "png", "parts": []}
