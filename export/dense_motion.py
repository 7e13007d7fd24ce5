"""The dense motion network (``generator.dense_motion_network`` in the checkpoints)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import AntiAliasDownsample, Hourglass, inverse_2x2, make_coordinate_grid, warp
from .config import ModelConfig


class DenseMotion(NamedTuple):
    """What the dense motion network predicts on the down-sampled grid (h x w)."""

    deformation: Tensor  # B x h x w x 2, sampling grid from driving to source
    mask: Tensor  # B x (K+1) x h x w, softmax weights of the background and each keypoint
    occlusion_map: Tensor | None  # B x 1 x h x w in (0, 1), or None when not estimated
    sparse_deformed: Tensor  # B x (K+1) x C x h x w, the source warped by each motion


def keypoint_gaussians(value: Tensor, grid: Tensor, variance: float) -> Tensor:
    """exp(-0.5 |p - kp|^2 / variance) on the grid. value: B x K x 2, grid: h x w x 2
    -> B x K x h x w."""
    diff = grid[None, None] - value[:, :, None, None, :]  # B x K x h x w x 2
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class DenseMotionNetwork(nn.Module):
    """Combines per-keypoint affine motions into one dense deformation (and occlusion map)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        params = config.generator.dense_motion
        self.num_kp = config.num_kp
        self.kp_variance = params.kp_variance
        self.hourglass = Hourglass(
            params.block_expansion,
            (config.num_kp + 1) * (config.num_channels + 1),
            params.num_blocks,
            params.max_features,
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, config.num_kp + 1, 7, padding=3)
        self.occlusion: nn.Conv2d | None = None
        if config.generator.estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
        self.down: AntiAliasDownsample | None = None
        if params.scale_factor != 1:
            self.down = AntiAliasDownsample(config.num_channels, params.scale_factor)

    def downsample(self, source: Tensor) -> Tensor:
        """The source at the motion network's scale: B x C x H x W -> B x C x h x w.

        Depends only on the avatar: compute it once per avatar.
        """
        return self.down(source) if self.down is not None else source

    def sparse_motions(
        self,
        grid: Tensor,
        kp_driving: Tensor,
        jac_driving: Tensor | None,
        kp_source: Tensor,
        jac_source: Tensor | None,
    ) -> Tensor:
        """T_k(z) = J_src_k inv(J_drv_k) (z - drv_k) + src_k, background T_0(z) = z.

        grid: h x w x 2, keypoints B x K x 2, jacobians B x K x 2 x 2 -> B x (K+1) x h x w x 2.
        """
        b, _k, _ = kp_driving.shape
        h, w, _ = grid.shape
        centered = grid[None, None] - kp_driving[:, :, None, None, :]  # B x K x h x w x 2
        if jac_driving is not None and jac_source is not None:
            jacobian = torch.matmul(jac_source, inverse_2x2(jac_driving))  # B x K x 2 x 2
            # (J z)_i = sum_j J_ij z_j, written out to avoid a B x K x h x w x 2 x 2 repeat.
            jacobian = jacobian[:, :, None, None]  # B x K x 1 x 1 x 2 x 2
            centered = (jacobian * centered[..., None, :]).sum(-1)  # B x K x h x w x 2
        driving_to_source = centered + kp_source[:, :, None, None, :]
        identity = grid[None, None].expand(b, 1, h, w, 2)
        return torch.cat([identity, driving_to_source], dim=1)

    def forward(
        self,
        source_down: Tensor,
        kp_driving: Tensor,
        jac_driving: Tensor | None,
        kp_source: Tensor,
        jac_source: Tensor | None,
    ) -> DenseMotion:
        """source_down: B x C x h x w (from :meth:`downsample`); keypoints B x K x 2."""
        b, c, h, w = source_down.shape
        k1 = self.num_kp + 1
        grid = make_coordinate_grid(h, w, source_down.dtype, source_down.device)  # h x w x 2
        heatmap = keypoint_gaussians(kp_driving, grid, self.kp_variance) - keypoint_gaussians(
            kp_source, grid, self.kp_variance
        )  # B x K x h x w
        heatmap = torch.cat([heatmap.new_zeros(b, 1, h, w), heatmap], dim=1)  # B x K+1 x h x w
        motions = self.sparse_motions(grid, kp_driving, jac_driving, kp_source, jac_source)
        repeated = source_down[:, None].expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = warp(repeated, motions.reshape(b * k1, h, w, 2)).reshape(b, k1, c, h, w)
        stacked = torch.cat([heatmap[:, :, None], deformed], dim=2)  # B x K+1 x C+1 x h x w
        features = self.hourglass(stacked.reshape(b, k1 * (c + 1), h, w))
        mask = F.softmax(self.mask(features), dim=1)  # B x K+1 x h x w
        deformation = (motions * mask[..., None]).sum(dim=1)  # B x h x w x 2
        occlusion = torch.sigmoid(self.occlusion(features)) if self.occlusion is not None else None
        return DenseMotion(deformation, mask, occlusion, deformed)
