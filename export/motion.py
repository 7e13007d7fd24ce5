"""Relative and absolute motion: how driving keypoints become the keypoints fed to the generator.

FOMM's relative motion (``normalize_kp`` of the reference demo) is

    value    = (drv - ref) * s + src
    jacobian = (J_drv @ inv(J_ref)) @ J_src
    s        = sqrt(area(hull(src))) / sqrt(area(hull(ref)))   (adapt-scale; else 1)

Everything but ``drv`` depends only on the avatar (src) and the reference frame (ref), so it is
folded once into a :class:`MotionTransfer` (scale, offset = src - ref * s,
jacobian transfer = inv(J_ref) @ J_src); per frame only ``drv * s + offset`` and
``J_drv @ transfer`` remain. Absolute motion is the same map with s = 1, offset = 0 and an
identity transfer, so one per-frame graph serves both modes.

The per-frame map the graph applies is affine in the driving keypoints and jacobians:

    value    = drv * scale + offset              scale B x K x 1 (one factor per keypoint)
    jacobian = J_drv @ transfer + jacobian_offset

With one scale for every keypoint and a zero jacobian offset this is the motion above. The
per-keypoint scale and the jacobian offset let the live loop blend each frame's keypoints with
their smoothed history inside the graph (``live.smoothing``): drv * a + prev * (1 - a) is affine
in drv too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class MotionTransfer:
    """Per-frame keypoints = driving * scale + offset;
    jacobians = J_driving @ jacobian + jacobian_offset."""

    scale: np.ndarray  # B x K x 1 float32, the adapt-scale factor s of each keypoint
    offset: np.ndarray  # B x K x 2 float32, src - ref * s (zero for absolute motion)
    jacobian: np.ndarray | None  # B x K x 2 x 2 float32, inv(J_ref) @ J_src; None without jacobians
    # B x K x 2 x 2 float32 added to the transferred jacobians (zero but while smoothing);
    # None without jacobians.
    jacobian_offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.jacobian is not None and self.jacobian_offset is None:
            object.__setattr__(self, "jacobian_offset", np.zeros_like(self.jacobian))

    @property
    def num_kp(self) -> int:
        return int(self.offset.shape[1])


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of N x 2 points (0 for fewer than 3 or collinear points)."""
    pts = sorted({(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64)})
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def hull_scale(kp_source: np.ndarray, kp_reference: np.ndarray) -> float:
    """sqrt(area(hull(src))) / sqrt(area(hull(ref))) of batch 0's keypoints (B x K x 2).

    Returns 1 when the reference keypoints span no area (a degenerate reference frame).
    """
    ref_area = convex_hull_area(np.asarray(kp_reference)[0])
    if ref_area <= 1e-12:
        return 1.0
    return float(np.sqrt(convex_hull_area(np.asarray(kp_source)[0])) / np.sqrt(ref_area))


def _inverse_2x2(m: np.ndarray) -> np.ndarray:
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2) / det[..., None, None]


def relative_motion(
    kp_source: np.ndarray,
    jac_source: np.ndarray | None,
    kp_reference: np.ndarray,
    jac_reference: np.ndarray | None,
    adapt_scale: bool = True,
) -> MotionTransfer:
    """Relative motion against a reference frame (keypoints B x K x 2, jacobians B x K x 2 x 2).

    Compute it when the avatar or the reference frame changes, never per frame.
    """
    src = np.asarray(kp_source, dtype=np.float64)
    ref = np.asarray(kp_reference, dtype=np.float64)
    batch, num_kp = src.shape[:2]
    s = hull_scale(src, ref) if adapt_scale else 1.0
    scale = np.full((batch, num_kp, 1), s, dtype=np.float64)
    offset = src - ref * scale
    jacobian = None
    if jac_source is not None and jac_reference is not None:
        jacobian = _inverse_2x2(np.asarray(jac_reference, np.float64)) @ np.asarray(
            jac_source, np.float64
        )
        jacobian = jacobian.astype(np.float32)
    return MotionTransfer(scale.astype(np.float32), offset.astype(np.float32), jacobian)


def absolute_motion(num_kp: int, jacobian: bool = True, batch: int = 1) -> MotionTransfer:
    """The identity map: the driving keypoints are fed to the generator unchanged."""
    eye = np.broadcast_to(np.eye(2, dtype=np.float32), (batch, num_kp, 2, 2)).copy()
    return MotionTransfer(
        scale=np.ones((batch, num_kp, 1), np.float32),
        offset=np.zeros((batch, num_kp, 2), np.float32),
        jacobian=eye if jacobian else None,
    )


def apply_motion(
    kp_driving: Tensor,
    jac_driving: Tensor | None,
    scale: Tensor,
    offset: Tensor,
    jacobian: Tensor | None,
    jacobian_offset: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Per-frame half of the motion: (drv * s + offset, J_drv @ transfer + jacobian offset).

    kp_driving: B x K x 2, scale: B x K x 1, offset: B x K x 2, jacobians B x K x 2 x 2.
    """
    value = kp_driving * scale + offset  # B x K x 2
    if jac_driving is None or jacobian is None or jacobian_offset is None:
        return value, jac_driving
    return value, torch.matmul(jac_driving, jacobian) + jacobian_offset  # B x K x 2 x 2
