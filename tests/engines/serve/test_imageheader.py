"""Image headers read as libjpeg/libpng read them, and a bounded fuzz of decode and the parsers.

The fuzz runs in a child process whose OpenCV refuses images over 2**20 pixels
(OPENCV_IO_MAX_IMAGE_PIXELS), so that a header the parser misreads costs an assertion, not the
machine's memory. For every mutant that OpenCV decodes, the parser must have accepted it with
the decoded size; ``decode`` must return the model's frame or raise ProtocolError.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from engines.serve.imageheader import image_size, jpeg_size, png_size
from engines.serve.protocol import (
    ErrorCode,
    MessageType,
    PartSpec,
    ProtocolError,
    decode,
    encode,
    encode_image,
)
from tests.conftest import ROOT

SIZE = 32
SPEC = {"driving": PartSpec((SIZE, SIZE, 3), "uint8", image=True)}
MUTANTS = 4000  # per run; about 3 s


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), np.uint8)
    image[8:24, 4:20] = rng.integers(0, 256, (16, 16, 3))
    return image


def _sof(width: int, height: int, fills: int = 1) -> bytes:
    """A baseline SOF0 segment preceded by ``fills`` extra 0xFF fill bytes."""
    body = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff" * fills + b"\xff\xc0" + struct.pack(">H", len(body) + 2) + body


def _without_sof(jpeg: bytes) -> tuple[bytes, bytes]:
    """(everything before the SOF0 segment, everything after it)."""
    start = jpeg.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", jpeg, start + 2)
    return jpeg[:start], jpeg[start + 2 + length :]


def test_sizes_of_what_opencv_writes() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    assert image_size(encode_image(image, "png"), "png") == (30, 20)
    assert image_size(encode_image(image, "jpeg"), "jpeg") == (30, 20)
    for bad, encoding in ((b"not an image", "png"), (b"\xff\xd8\xff", "jpeg")):
        with pytest.raises(ValueError):
            image_size(bad, encoding)


def test_fill_bytes_before_a_frame_header_are_skipped_as_libjpeg_skips_them() -> None:
    """The image bomb: FF D8 FF FF C0 ... is a 32768 x 32768 frame to libjpeg."""
    head, tail = _without_sof(encode_image(_image(0), "jpeg"))
    bomb = head[:2] + _sof(32768, 32768, fills=1) + head[2:] + tail
    assert jpeg_size(bomb) == (32768, 32768)
    data = _frame_with(bomb)
    with pytest.raises(ProtocolError) as info:
        decode(data, SPEC)
    assert info.value.code is ErrorCode.SHAPE and "32768x32768" in info.value.message


def test_a_second_frame_header_is_refused() -> None:
    jpeg = encode_image(_image(1), "jpeg")
    assert jpeg_size(jpeg) == (SIZE, SIZE)
    head, tail = _without_sof(jpeg)
    with pytest.raises(ValueError, match="second frame header"):
        jpeg_size(head + _sof(SIZE, SIZE) + _sof(4096, 4096) + tail)
    with pytest.raises(ValueError, match="second frame header"):  # hidden after the scan
        jpeg_size(jpeg[:-2] + _sof(4096, 4096) + b"\xff\xd9")
    with pytest.raises(ValueError, match="where a marker belongs"):  # garbage libjpeg skips
        jpeg_size(head[:2] + b"\x00\x00" + _sof(SIZE, SIZE) + head[2:] + tail)


def test_png_ihdr_must_come_first_once_with_its_crc() -> None:
    png = encode_image(_image(2), "png")
    assert png_size(png) == (SIZE, SIZE)
    ihdr = png[8:33]
    with pytest.raises(ValueError, match="second IHDR"):
        png_size(png[:33] + ihdr + png[33:])
    forged = bytearray(png)
    forged[16:24] = struct.pack(">II", 4096, 4096)  # size changed, CRC not
    with pytest.raises(ValueError, match="CRC"):
        png_size(bytes(forged))
    body = b"IHDR" + struct.pack(">IIBBBBB", 4096, 4096, 8, 2, 0, 0, 0)
    forged[12:33] = body + struct.pack(">I", zlib.crc32(body))
    assert png_size(bytes(forged)) == (4096, 4096)  # a consistent header is read as written
    actl = b"acTL" + struct.pack(">II", 1, 0)
    with pytest.raises(ValueError, match="animated"):
        png_size(png[:33] + struct.pack(">I", 8) + actl + struct.pack(">I", zlib.crc32(actl)))


def _frame_with(image_bytes: bytes, encoding: str = "jpeg") -> bytes:
    """A FRAME message whose driving part is these encoded bytes."""
    template = encode(MessageType.FRAME, images={"driving": (_image(0), encoding)})
    (meta_len,) = struct.unpack_from("<I", template, 12)
    meta = json.loads(template[16 : 16 + meta_len])
    meta["parts"][0]["nbytes"] = len(image_bytes)
    meta_bytes = json.dumps(meta).encode()
    return template[:12] + struct.pack("<I", len(meta_bytes)) + meta_bytes + image_bytes


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 8))
        at = int(rng.integers(0, max(1, len(out))))
        if kind == 0 and out:
            out[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and out:
            out[at] = int(rng.integers(0, 256))
        elif kind == 2:
            out[at:at] = b"\xff" * int(rng.integers(1, 4))
        elif kind == 3:
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
        elif kind == 4:
            del out[at : at + int(rng.integers(1, 16))]
        elif kind == 5:
            end = at + int(rng.integers(2, 32))
            out[at:at] = out[at:end]  # a repeated segment (a second SOF, IHDR, ...)
        elif kind == 6:
            big = int(rng.choice([0, 1, SIZE, 255, 4096, 32768, 65535]))
            out[at:at] = _sof(big, int(rng.choice([SIZE, big or 1])), int(rng.integers(0, 3)))
        else:
            del out[at:]
    return bytes(out)


def fuzz(count: int, seed: int) -> dict[str, int]:
    """Run ``count`` mutants (child process entry point); returns outcome counts."""
    import cv2

    assert int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) <= 1 << 20
    rng = np.random.default_rng(seed)
    stats = {"decoded": 0, "refused": 0, "opencv_decoded": 0, "parser_refused": 0}
    valid = {
        encoding: [encode_image(_image(s), encoding, 30 + 30 * s) for s in range(3)]
        for encoding in ("jpeg", "png")
    }
    for i in range(count):
        encoding = ("jpeg", "png")[i % 2]
        original = valid[encoding][i % 3]
        mutant = _mutate(rng, original)
        try:
            size: tuple[int, int] | None = image_size(mutant, encoding)
        except ValueError:
            size = None
            stats["parser_refused"] += 1
        try:
            flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
            decoded = cv2.imdecode(np.frombuffer(mutant, np.uint8), flags)
        except cv2.error:
            decoded = None
        if decoded is not None:
            stats["opencv_decoded"] += 1
            # Whatever OpenCV allocates, the parser read the same header (or refused).
            assert size is None or size == (decoded.shape[1], decoded.shape[0]), (size, i)
        # The whole message, mutated as an image part and as raw bytes.
        message = _frame_with(mutant, encoding)
        if i % 4 == 3:
            message = _mutate(rng, message)
        try:
            result = decode(message, SPEC, max_bytes=1 << 20)
        except ProtocolError:
            stats["refused"] += 1
        else:
            assert result.parts["driving"].shape == (SIZE, SIZE, 3)
            stats["decoded"] += 1
    return stats


def test_fuzzed_messages_decode_or_raise_protocol_errors_only() -> None:
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": str(1 << 20), "PYTHONPATH": str(ROOT)}
    code = (
        "import json, tests.engines.serve.test_imageheader as t; "
        f"print(json.dumps(t.fuzz({MUTANTS}, 18)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    # The mutants reached both sides of every check.
    assert stats["decoded"] > MUTANTS // 20 and stats["refused"] > MUTANTS // 4, stats
    assert stats["opencv_decoded"] > MUTANTS // 20 and stats["parser_refused"] > 0, stats
