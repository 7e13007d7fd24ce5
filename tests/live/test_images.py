"""Tests for live.images: decoding image files to RGB and listing image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live.errors import InputError
from live.images import image_files, read_image_rgb, to_rgb
from tests.live.fakes import solid, write_png


def test_read_image_rgb_keeps_channel_order(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", solid((255, 0, 0)))
    image = read_image_rgb(tmp_path / "red.png")
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert image[3, 3].tolist() == [255, 0, 0]


def test_read_image_rgb_converts_gray_and_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 180
    rgba[..., 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    assert read_image_rgb(tmp_path / "gray.png")[0, 0].tolist() == [77, 77, 77]
    assert read_image_rgb(tmp_path / "alpha.png")[0, 0].tolist() == [0, 0, 180]


@pytest.mark.parametrize("content", [b"", b"\x89PNG truncated"])
def test_read_image_rgb_names_an_undecodable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="Cannot decode the image") as info:
        read_image_rgb(path)
    assert str(path) in str(info.value)


def test_read_image_rgb_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Cannot read the image") as info:
        read_image_rgb(tmp_path / "gone.png")
    assert "gone.png" in str(info.value)


def test_to_rgb_returns_a_new_array_from_bgr() -> None:
    bgr = solid((0, 0, 255))
    rgb = to_rgb(bgr, bgr=True)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert not np.shares_memory(rgb, bgr)


def test_image_files_natural_order_any_case_no_hidden(tmp_path: Path) -> None:
    for name in ("f10.png", "f2.JPG", "f1.webp", ".f0.png", "notes.txt", "f3.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [path.name for path in image_files(tmp_path)] == ["f1.webp", "f2.JPG", "f10.png"]
