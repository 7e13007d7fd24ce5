"""Avatar photos: one image or a folder of them, each framed around its face once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import IMAGE_EXTENSIONS, image_files, read_image_rgb


@dataclass(frozen=True)
class AvatarImage:
    """One avatar photo as loaded from disk."""

    name: str  # file name, shown in the preview and logs
    path: Path  # where it came from
    image: np.ndarray  # H x W x 3 uint8 RGB, full photo


def load_avatar_images(path: str | Path) -> list[AvatarImage]:
    """Read an avatar image, or every image of a folder (sorted by name)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(
            f"Avatar {path} does not exist. Pass --avatar with an image file "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a folder of them."
        )
    files = image_files(path) if path.is_dir() else [path]
    if not files:
        raise InputError(
            f"The avatar folder {path} contains no images. Expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(
            f"Avatar {path} is not an image file: expected one of {', '.join(IMAGE_EXTENSIONS)}."
        )
    return [AvatarImage(f.name, f, read_image_rgb(f)) for f in files]
