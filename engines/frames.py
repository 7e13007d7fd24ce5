"""Conversions between images (H x W x 3 uint8 RGB) and model tensors (1 x 3 x H x W float32)."""

from __future__ import annotations

import numpy as np


def image_to_input(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H x W x C uint8 -> 1 x C x H x W float32 in [0, 1], written into ``out`` when given."""
    if out is None:
        out = np.empty((1, image.shape[2], image.shape[0], image.shape[1]), np.float32)
    np.divide(image.transpose(2, 0, 1), np.float32(255), out=out[0], casting="unsafe")
    return out


def output_to_image(
    prediction: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None
) -> np.ndarray:
    """1 x C x H x W float in [0, 1] -> H x W x C uint8 (round(x * 255)), into ``out``.

    ``scratch`` (H x W x C float32) avoids the per-call temporary on the hot path.
    """
    hwc = prediction[0].transpose(1, 2, 0)
    if out is None:
        out = np.empty(hwc.shape, np.uint8)
    if scratch is None:
        scratch = np.empty(hwc.shape, np.float32)
    np.multiply(hwc, np.float32(255), out=scratch)
    np.clip(scratch, 0, 255, out=scratch)
    np.rint(scratch, out=scratch)
    out[...] = scratch
    return out
