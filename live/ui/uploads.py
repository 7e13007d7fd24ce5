"""Photos added from the control page: checked like ``--avatar`` photos, saved without
overwriting anything.

A photo is refused (:class:`UploadRefused`, with what is wrong and what to do) when it is too
big to take, is not an image that decodes, is too small or too large in pixels, or has no face
the detector finds (``--avatar`` only warns about that; a photo added by hand is refused so the
user can pick another). An accepted one is written into the avatar folder under its own name,
or ``name-2.jpg``, ``name-3.jpg``, ... when that is taken, with an exclusive create: nothing
that exists is replaced.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..avatars import AvatarImage
from ..framing import FramingConfig
from ..images import IMAGE_EXTENSIONS, to_rgb
from ..pipeline import PreparedAvatar, prepare_avatars

#: Largest upload read (bytes); a bigger one is refused before its body is buffered.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Smallest and largest photo side in pixels.
MIN_SIDE, MAX_SIDE = 64, 8192
#: Most numbered names tried for a file name that is taken.
MAX_NAME_TRIES = 1000


class UploadRefused(Exception):
    """An uploaded photo that is not taken; the message says why and what to do."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status  # the HTTP status to answer with


@dataclass(frozen=True)
class AddedAvatar:
    """A photo that passed the checks and was saved."""

    path: Path  # where it was saved
    prepared: PreparedAvatar  # framed for the model, for the loop


def safe_name(name: str) -> str:
    """The file name to save an upload under: its last path part, characters other than
    letters, digits, ``.``, ``_`` and ``-`` replaced; refused when not an image suffix."""
    base = re.split(r"[\\/]", name or "")[-1].strip()
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in IMAGE_EXTENSIONS:
        raise UploadRefused(
            f"{base or 'The file'} is not an image file name: expected one ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:80] or "avatar"
    return f"{stem}.{suffix.lower()}"


def decode_photo(data: bytes, name: str) -> np.ndarray:
    """The photo as H x W x 3 RGB; the size in pixels is checked from the header before the
    pixels are decoded (a small file can announce a huge picture)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UploadRefused(
            f"{name} could not be read as an image ({exc}). Expected a photo in one of "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        ) from None
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise UploadRefused(
            f"{name} is {width}x{height} pixels: expected each side from {MIN_SIDE} to "
            f"{MAX_SIDE} pixels. Resize the photo and add it again."
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadRefused(
            f"{name} does not decode: the file is truncated or not an image. Export the "
            "photo again and add it."
        )
    return to_rgb(image, bgr=True)


def check_photo(
    data: bytes, name: str, resolution: int, crop: bool, framing: FramingConfig
) -> tuple[str, PreparedAvatar]:
    """The safe file name and the framed avatar of an uploaded photo, or UploadRefused."""
    filename = safe_name(name)
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRefused(too_big_message(name), status=413)
    image = decode_photo(data, filename)
    (prepared,) = prepare_avatars(
        [AvatarImage(filename, Path(filename), image)], resolution, crop, framing
    )
    if crop and not prepared.face_found:
        raise UploadRefused(
            f"No face found in {filename}. Expected a portrait with the face clearly visible "
            "(facing the camera, not too small); pick another photo."
        )
    return filename, prepared


def too_big_message(name: str) -> str:
    return (
        f"{name or 'The upload'} is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB. "
        "Save the photo smaller (a portrait of 1000 pixels is plenty) and add it again."
    )


def save_photo(folder: Path, filename: str, data: bytes) -> Path:
    """Write ``data`` as a new file in ``folder``: ``filename``, else the first free
    ``stem-N.suffix``; an existing file is never opened for writing."""
    stem, _, suffix = filename.rpartition(".")
    for attempt in range(1, MAX_NAME_TRIES + 1):
        candidate = folder / (filename if attempt == 1 else f"{stem}-{attempt}.{suffix}")
        try:
            file = open(candidate, "xb")  # noqa: SIM115 (removed again when the write fails)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _save_failed(folder, exc) from None
        try:
            with file:
                file.write(data)
        except OSError as exc:
            candidate.unlink(missing_ok=True)  # this run created it: no half photo is left
            raise _save_failed(folder, exc) from None
        return candidate
    raise UploadRefused(
        f"{folder} already holds {MAX_NAME_TRIES} photos named like {filename}: rename it.",
        status=409,
    )


def _save_failed(folder: Path, exc: OSError) -> UploadRefused:
    return UploadRefused(
        f"Could not save the photo into {folder}: {exc.strerror or exc}. Check that "
        "the avatar folder is writable and the disk is not full.",
        status=500,
    )
