"""An invisible watermark that marks every animated frame as synthetic, and its detector.

Why not a library: ``invisible-watermark`` (imwatermark, ``dwtDct``), the best-kept one, was
measured on 256x256 crops of the test photos (one core): 24-36 ms per frame to embed (the budget
is 2 ms), 40-43 dB, and its 32-bit payload came back with 25-28 % of bits wrong on one photo
even before any attack and 66-72 % right (chance level) after JPEG quality 50; it also needs
``opencv-python``, which would shadow the ``opencv-contrib-python`` MediaPipe needs. So this is
a small spread-spectrum watermark instead:

* **Pattern.** The 256x256 frame is cut into 4x4 tiles of 64x64. In each tile a keyed,
  pseudo-random +-1 sign is drawn for every 2-D DCT coefficient in a mid-frequency annulus
  (radius 8 to 28 of 64: periods of 4.6 to 16 pixels). Lower bands drown in the image's own
  energy, higher ones do not survive halving the size or JPEG/H.264 quantisation; bands
  3-14, 4-18, 6-20, 8-24, 8-28 and 10-30 were compared, 8-28 gives the best worst case over
  the attacks below. The inverse DCT of those signs, scaled to 2.2 grey levels RMS and rounded,
  is the pattern (for other model resolutions it is resized, keeping its RMS).
* **Payload.** The key is derived from the payload: ``sha256("avatarcam-watermark/v{N}")``. A
  frame either carries the pattern of format version N or it does not: a "zero-bit"
  watermark, which needs far less signal than coding bits. The key is public (it is in this
  file), so the mark is a *public disclosure mark*: anyone can add it to any image, or subtract
  it exactly from a marked one. A detection means "carries avatarcam's public disclosure
  mark", not "made by avatarcam".
* **Embedding** adds the same integer pattern to R, G and B (so only luma changes), with uint8
  saturation: two saturating adds on a precomputed pattern, about 0.02 ms per 256x256 frame on
  one core, PSNR about 41 dB against the unmarked frame. Where frames are still on a GPU
  (a server), :func:`torch_pattern` adds the same pattern there, without a sync.
* **Detection** takes luma, maps the frame back to 256x256 under each layout avatarcam produces
  (the frame as is, scaled; a square letterboxed into a wider or taller frame; a square
  cropped to fill one), takes the DCT of every tile that lies fully inside the picture and
  counts the coefficients whose sign agrees with the key: ``z = (agree - disagree) / sqrt(n)``.
  Under the null hypothesis (media nobody marked with this key on purpose) each sign agrees
  with probability 1/2 independently of the image and of the others, as the key's signs are
  independent fair coins, so Hoeffding's inequality bounds one hypothesis exactly, without a
  Gaussian approximation: ``P(z >= t) <= exp(-t**2 / 2)``. The sign detector is robust to the
  heavy-tailed DCT statistics of images: no single strong coefficient can dominate ``z``.
* **Search.** Sharing shifts, mirrors and crops frames. For each layout, the picture is also
  tried mirrored, and (full layout) as the middle 95 % and 90 % of a larger frame; for each of
  these a phase correlation (one FFT) with the pattern finds the best of the 64 x 64 offsets
  around the expected position, where ``z`` is then computed as above. ``z`` reported is the
  largest of the scores computed, each a score of one of ``HYPOTHESES`` hypotheses (layouts x
  scales x flips x offsets x versions), so the union bound gives a false-positive probability
  per frame of at most ``HYPOTHESES * exp(-THRESHOLD**2 / 2)``: the threshold is raised from
  6 to 8 for the hypotheses tried (about 6e-10 per frame).
* **Video.** A file is marked when at least half of the frames looked at are; whatever the
  correlation between frames, the chance that an unmarked video reaches that count is at most
  twice the per-frame probability (Markov's inequality on the number of false detections).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

#: Format version of the pattern embedded now; detection tries every version in VERSIONS.
VERSION = 1
VERSIONS = (1,)
#: Side of the frame the pattern is defined on (the model resolution).
SIZE = 256
#: Side of one DCT tile; SIZE // TILE tiles per row.
TILE = 64
#: Mid-frequency band: DCT coefficients (u, v) of a tile with BAND[0] <= sqrt(u²+v²) <= BAND[1].
BAND = (8.0, 28.0)
#: RMS of the embedded pattern in grey levels (PSNR = 20 log10(255 / RMS) before clipping).
STRENGTH = 2.2
#: Decision threshold on z, raised for the HYPOTHESES tried (see FRAME_FALSE_POSITIVE).
THRESHOLD = 8.0
#: Geometric layouts tried per frame (multiple-testing factor of the false-positive bound).
LAYOUTS = ("full", "letterbox", "crop")
#: Fractions of the marked frame's side the picture may show (a crop of 5 or 10 %), tried
#: with the full layout; the other layouts try 1.0 only.
SCALES = (1.0, 0.95, 0.9)
#: Offsets searched per axis around where the picture is expected (64 x 64 offsets).
SEARCH = 64
#: Size of the FFT used by the offset search (SIZE + SEARCH: the offsets do not wrap).
FFT_SIZE = SIZE + SEARCH
#: Every (layout, scale, flip, offset, version) that a frame's z may come from.
HYPOTHESES = (len(SCALES) + len(LAYOUTS) - 1) * 2 * SEARCH * SEARCH * len(VERSIONS)
#: Tiles that must lie inside the picture for a layout to be tested (enough coefficients for
#: the Gaussian approximation).
MIN_TILES = 4


def false_positive_probability(threshold: float = THRESHOLD) -> float:
    """Hoeffding's bound ``exp(-t**2 / 2)`` on P(z >= t) for one hypothesis of an unmarked
    frame (z: a normalised sum of independent fair +-1 signs)."""
    return math.exp(-(threshold**2) / 2.0)


#: Bound on the chance that an unmarked frame is reported as marked: every hypothesis tried
#: (union bound), 5.6e-10 at threshold 8.
FRAME_FALSE_POSITIVE = HYPOTHESES * false_positive_probability()


@cache
def _band_mask() -> np.ndarray:
    """TILE x TILE bool: the coefficients that carry the watermark."""
    u, v = np.meshgrid(np.arange(TILE), np.arange(TILE), indexing="ij")
    radius = np.hypot(u, v)
    return (radius >= BAND[0]) & (radius <= BAND[1])


@cache
def _signs(version: int) -> np.ndarray:
    """Tiles x Tiles x n int8 +-1: the keyed signs of each tile's band coefficients."""
    seed = int.from_bytes(hashlib.sha256(f"avatarcam-watermark/v{version}".encode()).digest()[:8])
    rng = np.random.default_rng(seed)
    tiles = SIZE // TILE
    count = int(_band_mask().sum())
    return (rng.integers(0, 2, (tiles, tiles, count), dtype=np.int8) * 2 - 1).astype(np.int8)


@cache
def pattern(version: int = VERSION) -> np.ndarray:
    """SIZE x SIZE float32: the spatial pattern of ``version`` (unit RMS)."""
    mask = _band_mask()
    signs = _signs(version)
    out = np.zeros((SIZE, SIZE), np.float32)
    coefficients = np.zeros((TILE, TILE), np.float32)
    for row in range(SIZE // TILE):
        for col in range(SIZE // TILE):
            coefficients[mask] = signs[row, col]
            out[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE] = cv2.idct(
                coefficients
            )
    return out / np.float32(np.sqrt(np.mean(out**2)))


class Watermarker:
    """Embeds the current watermark into H x W x 3 uint8 frames of one size.

    The pattern is computed once (scaled to ``height`` x ``width`` when that is not 256x256);
    :meth:`embed` then costs two saturating uint8 adds.
    """

    def __init__(self, height: int = SIZE, width: int | None = None, version: int = VERSION):
        width = height if width is None else width
        self.shape = (height, width, 3)  # frames this watermarker takes
        self.version = version  # format version embedded
        spatial = pattern(version) * np.float32(STRENGTH)
        if (height, width) != (SIZE, SIZE):
            shrink = height < SIZE or width < SIZE
            spatial = cv2.resize(
                spatial,
                (width, height),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC,
            )
            # Shrinking averages the finest part of the band away: keep the RMS (and PSNR).
            spatial *= np.float32(STRENGTH / np.sqrt(np.mean(spatial**2)))
        delta = np.rint(spatial).astype(np.int16)
        self.delta = delta  # H x W integer grey levels added to R, G and B
        self._plus = np.repeat(np.clip(delta, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        self._minus = np.repeat(np.clip(-delta, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    def embed(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The marked copy of ``image`` (H x W x 3 uint8 RGB), written into ``out`` when given
        (``out`` may be ``image`` itself)."""
        if image.shape != self.shape or image.dtype != np.uint8:
            raise ValueError(
                f"Watermarker for {self.shape} uint8 frames got {image.shape} {image.dtype}"
            )
        if out is None:
            out = np.empty_like(image)
        cv2.add(image, self._plus, dst=out)
        cv2.subtract(out, self._minus, dst=out)
        return out


def torch_pattern(resolution: int, device: str = "cpu", dtype=None):
    """1 x 1 x R x R tensor on ``device`` to add to a B x 3 x R x R prediction in [0, 1]
    before it leaves the device (``prediction.add_(pattern).clamp_(0, 1)``): no host copy and
    no synchronisation. Once the frame is rounded to uint8 (``round(x * 255)``) it equals
    :meth:`Watermarker.embed` of the unmarked frame, as the pattern is whole grey levels / 255.
    """
    import torch

    delta = torch.from_numpy(Watermarker(resolution).delta.astype(np.float32) / 255)
    return delta.to(device=device, dtype=dtype or torch.float32)[None, None]


@dataclass(frozen=True)
class Detection:
    """The watermark test of one frame."""

    z: float  # the largest standardised score over the hypotheses tried
    marked: bool  # z >= THRESHOLD
    layout: str  # the layout that gave z: full, letterbox or crop
    version: int | None  # the format version found; None when not marked
    offset: tuple[int, int] = (0, 0)  # (dy, dx) of the picture in the pattern that gave z
    scale: float = 1.0  # fraction of the marked frame's side the picture showed
    mirrored: bool = False  # the picture was a mirror image


def _luma(image: np.ndarray) -> np.ndarray:
    """H x W luma (uint8 for uint8 input: resizing uint8 is several times faster)."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
    return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = image.shape[1] > width or image.shape[0] > height
    resized = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return resized.astype(np.float32, copy=False)


def _layouts(luma: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, SIZE x SIZE luma in pattern coordinates, tiles x tiles bool of usable tiles)."""
    height, width = luma.shape
    tiles = SIZE // TILE
    every = np.ones((tiles, tiles), bool)
    layouts = [("full", _resize(luma, SIZE, SIZE), every)]
    if height == width:
        return layouts
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    layouts.append(("letterbox", _resize(luma[y0 : y0 + side, x0 : x0 + side], SIZE, SIZE), every))
    # Crop: the picture is the middle of a square of side max(height, width), scaled.
    scale = SIZE / max(height, width)
    inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - inner_h) // 2, (SIZE - inner_w) // 2
    canvas[top : top + inner_h, left : left + inner_w] = _resize(luma, inner_w, inner_h)
    edges = np.arange(tiles) * TILE
    rows = (edges >= top) & (edges + TILE <= top + inner_h)
    cols = (edges >= left) & (edges + TILE <= left + inner_w)
    layouts.append(("crop", canvas, rows[:, None] & cols[None, :]))
    return layouts


@cache
def _dct_matrix() -> np.ndarray:
    """TILE x TILE float32 orthonormal DCT-II matrix (cv2.dct's convention)."""
    k = np.arange(TILE)[:, None]
    n = np.arange(TILE)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * TILE)) * np.sqrt(2.0 / TILE)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


def _score(luma: np.ndarray, usable: np.ndarray, signs: np.ndarray) -> float | None:
    """z of the SIZE x SIZE ``luma`` against ``signs`` over the ``usable`` tiles (None: too
    few tiles for the Gaussian approximation)."""
    rows, cols = np.nonzero(usable)
    if len(rows) < MIN_TILES:
        return None
    tiles = SIZE // TILE
    grid = luma.reshape(tiles, TILE, tiles, TILE).transpose(0, 2, 1, 3)[rows, cols]  # T x 64 x 64
    matrix = _dct_matrix()
    band = (matrix @ grid @ matrix.T)[:, _band_mask()]  # T x n
    # Coefficients within float rounding of zero (flat areas) carry no sign: left out.
    sign = np.sign(band) * (np.abs(band) > 1e-3)
    agree = float(np.sum(sign * signs[rows, cols]))
    total = int(np.count_nonzero(sign))
    return agree / math.sqrt(total) if total else None


@cache
def _pattern_spectrum(version: int) -> np.ndarray:
    """FFT of the pattern on the FFT_SIZE canvas (for the offset search)."""
    canvas = np.zeros((FFT_SIZE, FFT_SIZE), np.float32)
    canvas[:SIZE, :SIZE] = pattern(version)
    return np.fft.rfft2(canvas)


def _best_offset(picture: np.ndarray, version: int) -> tuple[int, int]:
    """(dy, dx): where ``picture`` (h x w, pattern scale) best matches the pattern, among the
    SEARCH x SEARCH offsets centred on its centred position (phase correlation)."""
    h, w = picture.shape
    canvas = np.zeros((FFT_SIZE, FFT_SIZE), np.float32)
    canvas[:h, :w] = picture - picture.mean()
    spectrum = np.fft.rfft2(canvas)
    spectrum /= np.abs(spectrum) + 1e-6  # whitened: the image's own spectrum does not count
    # correlation[d] = sum_y picture[y] * pattern[y + d]
    correlation = np.fft.irfft2(np.conj(spectrum) * _pattern_spectrum(version), (FFT_SIZE,) * 2)
    y0, x0 = (SIZE - h) // 2 - SEARCH // 2, (SIZE - w) // 2 - SEARCH // 2
    rows = (np.arange(SEARCH) + y0) % FFT_SIZE
    cols = (np.arange(SEARCH) + x0) % FFT_SIZE
    window = correlation[np.ix_(rows, cols)]
    dy, dx = np.unravel_index(int(np.argmax(window)), window.shape)
    return int(dy + y0), int(dx + x0)


def _place(picture: np.ndarray, dy: int, dx: int, usable: np.ndarray):
    """The SIZE x SIZE canvas with ``picture`` at (dy, dx), and the usable tiles fully inside
    both it and ``usable``."""
    h, w = picture.shape
    canvas = np.zeros((SIZE, SIZE), np.float32)
    top, left, bottom, right = max(dy, 0), max(dx, 0), min(dy + h, SIZE), min(dx + w, SIZE)
    if bottom <= top or right <= left:
        return canvas, np.zeros_like(usable)
    canvas[top:bottom, left:right] = picture[top - dy : bottom - dy, left - dx : right - dx]
    edges = np.arange(SIZE // TILE) * TILE
    rows = (edges >= top) & (edges + TILE <= bottom)
    cols = (edges >= left) & (edges + TILE <= right)
    return canvas, usable & rows[:, None] & cols[None, :]


def _hypotheses(luma: np.ndarray):
    """(layout, scale, mapped picture, usable tiles) to search, per LAYOUTS and SCALES."""
    for name, mapped, usable in _layouts(luma):
        if name != "full":
            yield name, 1.0, mapped, usable
            continue
        for scale in SCALES:
            side = round(SIZE * scale)
            picture = mapped if side == SIZE else _resize(mapped, side, side)
            yield name, scale, picture, usable


def detect(image: np.ndarray) -> Detection:
    """Test one frame (H x W x 3 uint8 RGB, or H x W grey) for the watermark, also shifted
    (SEARCH x SEARCH offsets), mirrored and as a 5 or 10 % crop."""
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 16:
        raise ValueError(f"expected an H x W (x 3) image of at least 16x16, got {image.shape}")
    luma = _luma(image)
    best: Detection | None = None
    for name, scale, picture, usable in _hypotheses(luma):
        for mirrored in (False, True):
            seen = np.ascontiguousarray(picture[:, ::-1]) if mirrored else picture
            for version in VERSIONS:
                dy, dx = _best_offset(seen, version)
                canvas, tiles = _place(seen, dy, dx, usable)
                z = _score(canvas, tiles, _signs(version))
                if z is not None and (best is None or z > best.z):
                    marked = z >= THRESHOLD
                    found = version if marked else None
                    best = Detection(z, marked, name, found, (dy, dx), scale, mirrored)
    # No usable coefficient at all (a flat image): no evidence either way.
    return best or Detection(0.0, False, "full", None)
