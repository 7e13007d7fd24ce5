"""The keypoint detector (``kp_detector`` in the checkpoints)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import AntiAliasDownsample, Hourglass, make_coordinate_grid
from .config import ModelConfig


class KeypointDetector(nn.Module):
    """Predicts K keypoints (and their 2x2 jacobians) from an image.

    forward(image: B x C x H x W in [0, 1]) -> (value: B x K x 2, jacobian: B x K x 2 x 2 | None)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        params = config.kp_detector
        self.num_kp = config.num_kp
        self.temperature = params.temperature
        self.num_jacobian_maps = config.num_jacobian_maps
        self.predictor = Hourglass(
            params.block_expansion, config.num_channels, params.num_blocks, params.max_features
        )
        self.kp = nn.Conv2d(self.predictor.out_filters, config.num_kp, 7, padding=params.pad)
        self.jacobian: nn.Conv2d | None = None
        if self.num_jacobian_maps:
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * self.num_jacobian_maps, 7, padding=params.pad
            )
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(
                    torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps)
                )
        self.down: AntiAliasDownsample | None = None
        if params.scale_factor != 1:
            self.down = AntiAliasDownsample(config.num_channels, params.scale_factor)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        x = self.down(image) if self.down is not None else image
        features = self.predictor(x)  # B x F x h x w
        logits = self.kp(features)  # B x K x h' x w'
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.reshape(b, k, h * w) / self.temperature, dim=2)
        heatmap = heatmap.reshape(b, k, h, w, 1)
        grid = make_coordinate_grid(h, w, heatmap.dtype, heatmap.device)  # h' x w' x 2
        value = (heatmap * grid).sum(dim=(2, 3))  # B x K x 2
        if self.jacobian is None:
            return value, None
        jacobian_map = self.jacobian(features).reshape(b, self.num_jacobian_maps, 4, h, w)
        jacobian = (heatmap.reshape(b, k, 1, h, w) * jacobian_map).sum(dim=(3, 4))  # B x K x 4
        return value, jacobian.reshape(b, k, 2, 2)
