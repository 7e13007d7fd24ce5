"""Conversions between images (H x W x 3 uint8 RGB) and model tensors (1 x 3 x H x W float32)."""

from __future__ import annotations

import numpy as np

from .errors import EngineError


class NonFiniteOutput(EngineError):
    """The network returned NaN or infinity: there is no image to show, and none is made up."""


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
    with np.errstate(over="ignore", invalid="ignore"):  # NaN and overflow are checked here
        np.multiply(hwc, np.float32(255), out=scratch)
        # One dot product (BLAS, no allocation: a third of a sum's time) is NaN or infinite
        # when any value is, or, rarely, when huge values overflow it: then the exact check
        # finds nothing and the frame is converted.
        flat = scratch.reshape(-1)
        total = np.dot(flat, flat)
    if not np.isfinite(total):
        _check_finite(scratch)
    np.clip(scratch, 0, 255, out=scratch)
    np.rint(scratch, out=scratch)
    out[...] = scratch
    return out


def _check_finite(values: np.ndarray) -> None:
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise NonFiniteOutput(
            f"The network's output holds {bad} of {values.size} values that are not finite "
            "numbers (NaN or infinity), so there is no image for this frame and none was "
            "written. The checkpoint's weights are checked when it loads, so the numbers went "
            "out of range while computing: with --precision fp16 try --precision fp32; "
            "otherwise try another --backend, or another checkpoint."
        )
