"""Photos added from the control page: checked like --avatar photos, never written over."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from live.framing import FramingConfig
from live.ui.uploads import (
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    UploadRefused,
    check_photo,
    safe_name,
    save_photo,
)
from tests.conftest import shared_path


def _png(width: int, height: int) -> bytes:
    gradient = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    ok, data = cv2.imencode(".png", cv2.merge([gradient, gradient, gradient]))
    assert ok
    return data.tobytes()


def test_names_are_cleaned_and_must_be_images() -> None:
    assert safe_name("../../etc/Me Photo!.JPG") == "Me_Photo.jpg"
    assert safe_name("C:\\Users\\x\\face.png") == "face.png"
    assert safe_name("...png") == "avatar.png"
    for bad in ("notes.txt", "noext", "", "photo.jpg.exe"):
        with pytest.raises(UploadRefused, match="not an image file name"):
            safe_name(bad)


def test_a_portrait_is_framed_and_a_photo_without_face_refused() -> None:
    data = shared_path("media", "avatars", "obama.jpg").read_bytes()
    name, prepared = check_photo(data, "obama.jpg", 64, True, FramingConfig())
    assert name == "obama.jpg" and prepared.face_found
    assert prepared.image.shape == (64, 64, 3) and prepared.image.dtype == np.uint8
    with pytest.raises(UploadRefused, match=r"No face found in wall\.png"):
        check_photo(_png(320, 240), "wall.png", 64, True, FramingConfig())
    # --no-crop runs frame nothing: any photo that decodes is taken.
    assert check_photo(_png(320, 240), "wall.png", 64, False, FramingConfig())[1].face_found


def test_undecodable_tiny_huge_and_oversized_photos_are_refused() -> None:
    framing = FramingConfig()
    with pytest.raises(UploadRefused, match="could not be read as an image"):
        check_photo(b"not an image at all", "x.png", 64, True, framing)
    with pytest.raises(UploadRefused, match="truncated"):
        check_photo(_png(320, 240)[:200], "x.png", 64, True, framing)
    with pytest.raises(UploadRefused, match="32x32 pixels"):
        check_photo(_png(32, 32), "x.png", 64, True, framing)
    # A small file announcing a huge picture is refused from its header, before decoding.
    huge = _png(MAX_SIDE + 8, 16)
    with pytest.raises(UploadRefused, match=f"{MAX_SIDE + 8}x16 pixels"):
        check_photo(huge, "x.png", 64, True, framing)
    with pytest.raises(UploadRefused) as refused:
        check_photo(b"\0" * (MAX_UPLOAD_BYTES + 1), "x.png", 64, True, framing)
    assert refused.value.status == 413


def test_saving_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "me.jpg").write_bytes(b"old")
    (tmp_path / "me-2.jpg").write_bytes(b"older")
    saved = save_photo(tmp_path, "me.jpg", b"new")
    assert saved == tmp_path / "me-3.jpg" and saved.read_bytes() == b"new"
    assert (tmp_path / "me.jpg").read_bytes() == b"old"
    assert (tmp_path / "me-2.jpg").read_bytes() == b"older"
    assert save_photo(tmp_path, "other.png", b"x") == tmp_path / "other.png"


def test_a_folder_that_cannot_be_written_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(UploadRefused, match="Could not save the photo") as refused:
        save_photo(tmp_path / "missing", "me.jpg", b"x")
    assert refused.value.status == 500
