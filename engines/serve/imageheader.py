"""The size an encoded image declares, read the way the decoder will read it, before decoding.

The server allocates what a frame's header declares, so the header it checks must be the one
libjpeg and libpng act on. Both parsers walk the whole structure and refuse anything the
decoders would read differently or only tolerate with a warning:

- JPEG (libjpeg's ``next_marker``/``read_markers``): any number of ``0xFF`` fill bytes may
  precede a marker byte; bytes that are not a marker (garbage, ``FF 00`` outside entropy-coded
  data) are refused, where libjpeg would skip them and keep looking. Standalone markers (RSTn,
  TEM) carry no length. The frame size is the first SOFn's; a second SOFn anywhere in the file
  (libjpeg's "duplicate SOF") is refused, as are a second SOI, a scan before any SOF and the
  reserved markers libjpeg does not know.
- PNG (libpng's ``png_read_info``): the signature, then an IHDR chunk of exactly 13 bytes with
  a correct CRC; chunks must fit the data; a second IHDR and the animation chunks (APNG's
  acTL/fcTL/fdAT, which give frames sizes of their own) are refused.

Each returns (width, height) or raises :class:`ValueError` saying what is wrong; the protocol
turns that into a ``malformed`` error.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_ANIMATION = (b"acTL", b"fcTL", b"fdAT")
#: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): frame headers.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_RST = frozenset(range(0xD0, 0xD8))
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
#: Markers with a length that libjpeg reads or skips: DHT, DAC, DQT, DNL, DRI, DHP, EXP, APPn,
#: JPGn, COM (and SOFn, handled apart).
_WITH_LENGTH = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE}) | frozenset(
    range(0xE0, 0xFE)
)


def image_size(data: bytes, encoding: str) -> tuple[int, int]:
    """(width, height) an encoded image declares; ValueError when its structure is wrong."""
    if encoding == "png":
        return png_size(data)
    if encoding == "jpeg":
        return jpeg_size(data)
    raise ValueError(f"unknown image encoding {encoding!r}")


def jpeg_size(data: bytes) -> tuple[int, int]:
    if data[:2] != b"\xff\xd8":
        raise ValueError("a JPEG starts with FF D8 (SOI)")
    size: tuple[int, int] | None = None
    end = len(data)
    i = 2
    in_scan = False  # after SOS: entropy-coded data until the next marker
    while True:
        if in_scan:
            # Entropy-coded data: FF 00 is a stuffed byte, FF D0..D7 a restart marker.
            i = data.find(b"\xff", i)
            if i < 0:
                break  # no EOI: libjpeg pads the scan, the size is still the SOF's
            j = i + 1
            while j < end and data[j] == 0xFF:
                j += 1
            if j >= end:
                break
            if data[j] == 0x00 or data[j] in _RST:
                i = j + 1
                continue
            i = j - 1  # a marker: FF (fills) MM
        if i >= end:
            raise ValueError("the JPEG ends before its first scan")
        if data[i] != 0xFF:
            raise ValueError(f"byte {i} of the JPEG is 0x{data[i]:02X} where a marker belongs")
        while i < end and data[i] == 0xFF:  # fill bytes, as libjpeg skips them
            i += 1
        if i >= end:
            raise ValueError("the JPEG ends in fill bytes")
        marker = data[i]
        i += 1
        if marker == _EOI:
            break
        if marker in _RST or marker == _TEM:
            continue
        if marker == 0x00 or marker == _SOI:
            raise ValueError(f"marker FF {marker:02X} where a segment belongs")
        if marker not in _SOF and marker not in _WITH_LENGTH and marker != _SOS:
            raise ValueError(f"unknown JPEG marker FF {marker:02X}")
        if i + 2 > end:
            raise ValueError("the JPEG ends inside a segment length")
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2 or i + length > end:
            raise ValueError(f"JPEG segment FF {marker:02X} has length {length}")
        if marker in _SOF:
            if size is not None:
                raise ValueError("the JPEG has a second frame header (SOF)")
            if length < 8:
                raise ValueError(f"JPEG frame header of {length} bytes")
            height, width = struct.unpack_from(">HH", data, i + 3)
            if not width or not height:
                raise ValueError(f"JPEG frame header of {width}x{height}")
            size = (width, height)
        elif marker == _SOS:
            if size is None:
                raise ValueError("the JPEG has a scan before its frame header")
            in_scan = True
        i += length
        if i >= end and not in_scan:
            break
    if size is None:
        raise ValueError("the JPEG has no frame header (SOF)")
    return size


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("a PNG starts with its 8-byte signature")
    if len(data) < 33:
        raise ValueError("the PNG is too short for its IHDR chunk")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ValueError("a PNG's first chunk is a 13-byte IHDR")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise ValueError("the PNG's IHDR fails its CRC")
    width, height = struct.unpack_from(">II", data, 16)
    if not 0 < width < 1 << 31 or not 0 < height < 1 << 31:
        raise ValueError(f"PNG of {width}x{height}")
    i = 33
    end = len(data)
    while i + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, i)
        if i + 12 + length > end:
            raise ValueError(f"PNG chunk {kind!r} of {length} bytes does not fit")
        if kind == b"IHDR":
            raise ValueError("the PNG has a second IHDR")
        if kind in _PNG_ANIMATION:
            raise ValueError("animated PNGs are not accepted")
        i += 12 + length
        if kind == b"IEND":
            break
    return width, height
