"""Building blocks of FOMM, with the state-dict names of the original implementation.

Every norm is a plain ``BatchNorm2d`` (the original used a synchronized batch norm with the
same keys), every warp is a bilinear ``grid_sample`` with zero padding and
``align_corners=True`` (the behaviour of PyTorch 1.0, which the checkpoints were trained on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_coordinate_grid(
    height: int, width: int, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """Grid of (x, y) in [-1, 1]: x_j = 2 j / (W - 1) - 1, y_i = 2 i / (H - 1) - 1.

    Returns H x W x 2, last axis (x, y).
    """
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    x = 2 * (x / (width - 1)) - 1  # W
    y = 2 * (y / (height - 1)) - 1  # H
    xx = x.view(1, width).expand(height, width)
    yy = y.view(height, 1).expand(height, width)
    return torch.stack([xx, yy], dim=2)  # H x W x 2


def warp(image: Tensor, grid: Tensor) -> Tensor:
    """Bilinear backward warp with zero padding and align_corners=True.

    image: B x C x H x W, grid: B x h x w x 2 in [-1, 1] -> B x C x h x w.
    """
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def inverse_2x2(matrix: Tensor) -> Tensor:
    """Closed-form inverse of ... x 2 x 2 matrices (adjugate / determinant; ONNX has no
    inverse op)."""
    a = matrix[..., 0, 0]
    b = matrix[..., 0, 1]
    c = matrix[..., 1, 0]
    d = matrix[..., 1, 1]
    det = a * d - b * c
    adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adjugate / det[..., None, None]


class SameBlock2d(nn.Module):
    """conv -> norm -> ReLU, same spatial size."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv -> norm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class UpBlock2d(nn.Module):
    """nearest x2 upsample -> conv -> norm -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """norm1 -> ReLU -> conv1 -> norm2 -> ReLU -> conv2, plus the input."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(features, affine=True)
        self.norm2 = nn.BatchNorm2d(features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _channels(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * 2**level)


class Encoder(nn.Module):
    """Hourglass encoder: keeps every intermediate, the input included."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else _channels(block_expansion, max_features, i),
                _channels(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: up block, then concatenate the next shallower encoder output."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                (1 if i == num_blocks - 1 else 2) * _channels(block_expansion, max_features, i + 1),
                _channels(block_expansion, max_features, i),
            )
            for i in reversed(range(num_blocks))
        )
        self.out_filters = block_expansion + in_features

    def forward(self, features: list[Tensor]) -> Tensor:
        out = features[-1]
        for i, block in enumerate(self.up_blocks):
            out = torch.cat([block(out), features[-2 - i]], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style encoder/decoder; output has ``block_expansion + in_features`` channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then keep every ``int(1/scale)``-th pixel (identity when scale is 1).

    The kernel is the ``weight`` buffer of the state dict, shape C x 1 x k x k.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        self.stride = int(1 / scale)
        self.groups = channels
        axis = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2
        gauss = torch.exp(-((axis - mean) ** 2) / (2 * sigma**2)) if sigma > 0 else axis * 0 + 1
        kernel = gauss[:, None] * gauss[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, self.weight, groups=self.groups)
        return out[:, :, :: self.stride, :: self.stride]
