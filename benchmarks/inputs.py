"""Real-looking benchmark inputs: an avatar image and a short driving clip at model resolution.

Speed depends on shapes only, but the error columns compare every backend with the fp32
baseline, and that comparison means most on images a face model would see. Inputs come from
``--source``/``--driving``, else from the shared sample media beside the checkout
(``$AVATARCAM_SHARED/media``, default ``../shared/media``), else they are synthetic: smooth
random colour fields that move from frame to frame, recorded as such in the results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from .errors import BenchmarkError

SAMPLE_SOURCE = Path("media", "avatars", "mona.jpg")
SAMPLE_DRIVING = Path("media", "driving", "mona-talking.gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class BenchInputs:
    """Frames in the layout engines take, float32 in [0, 1] (exact uint8 / 255 values)."""

    source: np.ndarray  # 1 x C x H x W, the avatar
    driving: np.ndarray  # F x C x H x W, driving frames; frame 0 is the reference frame
    description: dict[str, Any]  # where they came from, for the results file


def shared_dir() -> Path:
    """The shared reference folder: $AVATARCAM_SHARED, else ``shared`` beside the checkout."""
    env = os.environ.get("AVATARCAM_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared"


def _square(image: Image.Image, size: int, mode: str) -> np.ndarray:
    """Centre-crop to a square, resize to size x size, -> C x H x W float32 in [0, 1]."""
    image = image.convert(mode)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def _open(path: Path, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise BenchmarkError(
            f"The {what} {path} does not exist. Pass an image file (PNG, JPEG, GIF), or leave "
            "the option out to use the shared sample media or synthetic frames."
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BenchmarkError(
            f"The {what} {path} could not be read as an image ({exc}). Expected a PNG, JPEG, "
            "GIF or another format Pillow opens."
        ) from None
    return image


def _image_mode(channels: int) -> str:
    if channels == 3:
        return "RGB"
    if channels == 1:
        return "L"
    raise BenchmarkError(
        f"The model takes {channels}-channel images; the benchmark can feed 1 (grey) or 3 (RGB) "
        "channels. Use a config with num_channels 1 or 3."
    )


def load_source(path: Path, size: int, channels: int) -> np.ndarray:
    """The avatar image at ``path`` as 1 x C x size x size."""
    return _square(_open(path, "avatar image"), size, _image_mode(channels))[None]


def load_driving(path: Path, size: int, channels: int, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` frames of a multi-frame image (GIF), an image folder (sorted by
    name) or a single image, as F x C x size x size."""
    mode = _image_mode(channels)
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BenchmarkError(
                f"The driving folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}). Put "
                "the frames there as numbered image files, or pass a GIF."
            )
        for file in files[:max_frames]:
            frames.append(_square(_open(file, "driving frame"), size, mode))
    else:
        clip = _open(path, "driving clip")
        for frame in ImageSequence.Iterator(clip):
            frames.append(_square(frame, size, mode))
            if len(frames) == max_frames:
                break
    return np.stack(frames)


def synthetic_inputs(size: int, channels: int, frames: int, seed: int) -> BenchInputs:
    """Smooth random colour fields: an avatar and frames that rotate and shift it a little."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, channels), dtype=np.uint8)
    field = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse)
    field = field.resize((size, size), Image.Resampling.BICUBIC)
    mode = _image_mode(channels)
    source = _square(field, size, mode)[None]
    driving = []
    for index in range(frames):
        phase = 2 * np.pi * index / max(frames, 1)
        moved = field.rotate(
            8 * np.sin(phase),
            resample=Image.Resampling.BILINEAR,
            translate=(size * 0.05 * np.cos(phase), size * 0.03 * np.sin(phase)),
        )
        driving.append(_square(moved, size, mode))
    return BenchInputs(
        source=source,
        driving=np.stack(driving),
        description={
            "kind": "synthetic",
            "detail": f"smooth random colour fields (seed {seed}), rotated and shifted per frame",
            "source": None,
            "driving": None,
            "frames": frames,
        },
    )


def load_inputs(
    source: Path | None,
    driving: Path | None,
    size: int,
    channels: int,
    max_frames: int,
    seed: int,
) -> BenchInputs:
    """The avatar and driving frames the benchmark feeds every backend."""
    shared = shared_dir()
    if source is None and (shared / SAMPLE_SOURCE).is_file():
        source = shared / SAMPLE_SOURCE
    if driving is None and (shared / SAMPLE_DRIVING).is_file():
        driving = shared / SAMPLE_DRIVING
    if source is None or driving is None:
        synthetic = synthetic_inputs(size, channels, max_frames, seed)
        if source is None and driving is None:
            return synthetic
        real_source = load_source(source, size, channels) if source else synthetic.source
        real_driving = (
            load_driving(driving, size, channels, max_frames) if driving else synthetic.driving
        )
        return BenchInputs(
            source=real_source,
            driving=real_driving,
            description={
                "kind": "mixed",
                "detail": "one of avatar/driving from a file, the other synthetic",
                "source": str(source) if source else None,
                "driving": str(driving) if driving else None,
                "frames": int(real_driving.shape[0]),
            },
        )
    frames = load_driving(driving, size, channels, max_frames)
    return BenchInputs(
        source=load_source(source, size, channels),
        driving=frames,
        description={
            "kind": "images",
            "detail": "centre-cropped to a square and resized (Lanczos) to the model resolution",
            "source": str(source),
            "driving": str(driving),
            "frames": int(frames.shape[0]),
        },
    )
