"""The occlusion-aware generator (``generator`` in the checkpoints), split in two halves.

The source half (``first`` and ``down_blocks`` on the avatar, and the avatar at the motion
network's scale) depends only on the avatar; :meth:`OcclusionAwareGenerator.encode` computes it
once. :meth:`OcclusionAwareGenerator.decode` is the per-frame half. ``forward`` runs both, as the
original network does, and returns the intermediate maps as well.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, warp
from .config import ModelConfig
from .dense_motion import DenseMotion, DenseMotionNetwork


class GeneratorOutput(NamedTuple):
    """The unsplit generator's outputs."""

    prediction: Tensor  # B x C x H x W in [0, 1]
    motion: DenseMotion  # deformation, mask, occlusion map and sparse deformations
    deformed: Tensor  # B x C x H x W, the source warped by the deformation


def _resize_like(x: Tensor, height: int, width: int) -> Tensor:
    if x.shape[2] == height and x.shape[3] == width:
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def resize_deformation(deformation: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize (align_corners=False) of a B x h x w x 2 grid to B x H x W x 2."""
    if deformation.shape[1] == height and deformation.shape[2] == width:
        return deformation
    return _resize_like(deformation.permute(0, 3, 1, 2), height, width).permute(0, 2, 3, 1)


class OcclusionAwareGenerator(nn.Module):
    """Warps the avatar's encoder features by the dense motion and decodes the frame."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        params = config.generator
        be, mf, n = params.block_expansion, params.max_features, params.num_down_blocks

        def channels(level: int) -> int:
            return min(mf, be * 2**level)

        self.dense_motion_network = DenseMotionNetwork(config)
        self.first = SameBlock2d(config.num_channels, be, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(channels(i), channels(i + 1)) for i in range(n)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(channels(n - i), channels(n - i - 1)) for i in range(n)
        )
        self.bottleneck = nn.Sequential()
        for i in range(params.num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(channels(n)))
        self.final = nn.Conv2d(be, config.num_channels, 7, padding=3)

    def encode(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Per-avatar half: source B x C x H x W -> (features B x F x H/2^n x W/2^n,
        source at the motion network's scale B x C x h x w)."""
        features = self.first(source)
        for block in self.down_blocks:
            features = block(features)
        return features, self.dense_motion_network.downsample(source)

    def decode(
        self,
        features: Tensor,
        source_down: Tensor,
        kp_driving: Tensor,
        jac_driving: Tensor | None,
        kp_source: Tensor,
        jac_source: Tensor | None,
    ) -> tuple[Tensor, DenseMotion]:
        """Per-frame half: -> (prediction B x C x H x W, dense motion)."""
        motion = self.dense_motion_network(
            source_down, kp_driving, jac_driving, kp_source, jac_source
        )
        _, _, h, w = features.shape
        out = warp(features, resize_deformation(motion.deformation, h, w))
        if motion.occlusion_map is not None:
            out = out * _resize_like(motion.occlusion_map, h, w)
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out)), motion

    def forward(
        self,
        source: Tensor,
        kp_driving: Tensor,
        jac_driving: Tensor | None,
        kp_source: Tensor,
        jac_source: Tensor | None,
    ) -> GeneratorOutput:
        """The unsplit network, as the reference implementation runs it."""
        features, source_down = self.encode(source)
        prediction, motion = self.decode(
            features, source_down, kp_driving, jac_driving, kp_source, jac_source
        )
        _, _, h, w = source.shape
        deformed = warp(source, resize_deformation(motion.deformation, h, w))
        return GeneratorOutput(prediction, motion, deformed)
