"""The whole FOMM network: keypoint detector and generator, as stored in the checkpoints."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .generator import GeneratorOutput, OcclusionAwareGenerator
from .keypoint_detector import KeypointDetector


class Keypoints(NamedTuple):
    """Keypoints of a batch of images."""

    value: Tensor  # B x K x 2, (x, y) in [-1, 1]
    jacobian: Tensor | None  # B x K x 2 x 2, or None when the model has no jacobians


class FOMM(nn.Module):
    """``kp_detector`` and ``generator`` under the checkpoint's names; always in eval mode."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.kp_detector = KeypointDetector(config)
        self.generator = OcclusionAwareGenerator(config)
        self.eval()

    def train(self, mode: bool = True) -> FOMM:
        # Batch norm runs on the checkpoint's statistics only: this network is never trained
        # here, and a stray train() (torch.onnx.export restores flags) must not change outputs.
        return super().train(False)

    def keypoints(self, image: Tensor) -> Keypoints:
        """image: B x C x H x W in [0, 1] -> keypoints."""
        return Keypoints(*self.kp_detector(image))

    def animate(
        self, source: Tensor, source_kp: Keypoints, driving_kp: Keypoints
    ) -> GeneratorOutput:
        """The unsplit generator: source image and both keypoint sets -> frame and maps."""
        return self.generator(
            source, driving_kp.value, driving_kp.jacobian, source_kp.value, source_kp.jacobian
        )


def build_model(config: ModelConfig, device: torch.device | str = "cpu") -> FOMM:
    """A randomly initialised network with ``config``'s shapes, in eval mode."""
    return FOMM(config).to(device)
