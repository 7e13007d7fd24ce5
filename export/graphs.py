"""The two exportable graphs as modules with plain tensor inputs and outputs in spec order.

Used by the ONNX export and by the torch engine, so both compute exactly the same thing.
"""

from __future__ import annotations

from torch import Tensor, nn

from .iospec import (
    AVATAR_FEATURES,
    AVATAR_JACOBIAN,
    AVATAR_KP,
    AVATAR_SMALL,
    DRIVING,
    MOTION_JACOBIAN,
    MOTION_JACOBIAN_OFFSET,
    MOTION_OFFSET,
    MOTION_SCALE,
    ModelIO,
)
from .model import FOMM
from .motion import apply_motion


class AvatarGraph(nn.Module):
    """avatar -> avatar_features, avatar_small, avatar_kp[, avatar_jacobian]."""

    def __init__(self, model: FOMM, io: ModelIO):
        super().__init__()
        self.model = model
        self.io = io

    def forward(self, avatar: Tensor) -> tuple[Tensor, ...]:
        features, small = self.model.generator.encode(avatar)
        kp, jacobian = self.model.kp_detector(avatar)
        outputs = (features, small, kp)
        return (*outputs, jacobian) if jacobian is not None else outputs


class FrameGraph(nn.Module):
    """driving + avatar state + motion transfer -> prediction, driving_kp[, driving_jacobian].

    forward takes the inputs in ``io.frame.inputs`` order.
    """

    def __init__(self, model: FOMM, io: ModelIO):
        super().__init__()
        self.model = model
        self.io = io
        self.input_names = io.frame.input_names

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        kp_driving, jac_driving = self.model.kp_detector(feeds[DRIVING])
        kp_new, jac_new = apply_motion(
            kp_driving,
            jac_driving,
            feeds[MOTION_SCALE],
            feeds[MOTION_OFFSET],
            feeds.get(MOTION_JACOBIAN),
            feeds.get(MOTION_JACOBIAN_OFFSET),
        )
        prediction, _ = self.model.generator.decode(
            feeds[AVATAR_FEATURES],
            feeds[AVATAR_SMALL],
            kp_new,
            jac_new,
            feeds[AVATAR_KP],
            feeds.get(AVATAR_JACOBIAN),
        )
        outputs = (prediction, kp_driving)
        return (*outputs, jac_driving) if jac_driving is not None else outputs
