"""The one I/O spec shared by the exported graphs and every engine.

Two graphs:

- ``avatar`` (once per avatar): the avatar image -> its encoder features, the avatar at the
  motion network's scale, and its keypoints. These outputs stay on the device and feed the
  frame graph under the same names.
- ``frame`` (once per frame): the cropped driving frame, the avatar's cached state and the
  motion transfer (see :mod:`export.motion`) -> the animated frame and the driving keypoints
  (the live loop needs them for calibration).

Every tensor is float32 at the graph boundary, whatever the internal precision; shapes are
static for one resolution and batch size. Engines feed and fetch tensors by these names only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig

AVATAR = "avatar"  # B x C x H x W avatar image in [0, 1]
AVATAR_FEATURES = "avatar_features"  # B x F x H/2^n x W/2^n generator encoder output
AVATAR_SMALL = "avatar_small"  # B x C x h x w avatar at the dense motion scale
AVATAR_KP = "avatar_kp"  # B x K x 2 avatar keypoints
AVATAR_JACOBIAN = "avatar_jacobian"  # B x K x 2 x 2 avatar jacobians
DRIVING = "driving"  # B x C x H x W driving frame in [0, 1]
MOTION_SCALE = "motion_scale"  # B x K x 1 per-keypoint factor on the driving keypoints
MOTION_OFFSET = "motion_offset"  # B x K x 2 keypoint offset (src - ref * s)
MOTION_JACOBIAN = "motion_jacobian"  # B x K x 2 x 2 jacobian transfer inv(J_ref) @ J_src
MOTION_JACOBIAN_OFFSET = "motion_jacobian_offset"  # B x K x 2 x 2 added after the transfer
#: The frame graph's motion inputs (see :mod:`export.motion`), in graph order.
MOTION_INPUTS = (MOTION_SCALE, MOTION_OFFSET, MOTION_JACOBIAN, MOTION_JACOBIAN_OFFSET)
PREDICTION = "prediction"  # B x C x H x W animated frame in [0, 1]
DRIVING_KP = "driving_kp"  # B x K x 2 driving keypoints (raw, before motion transfer)
DRIVING_JACOBIAN = "driving_jacobian"  # B x K x 2 x 2 driving jacobians

AVATAR_GRAPH = "avatar"
FRAME_GRAPH = "frame"


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output."""

    name: str  # the tensor's name in the ONNX graph and in engine feeds
    shape: tuple[int, ...]  # static shape
    dtype: str = "float32"  # numpy dtype name at the graph boundary


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one graph, in graph order."""

    name: str  # "avatar" or "frame"
    inputs: tuple[TensorSpec, ...]  # graph inputs
    outputs: tuple[TensorSpec, ...]  # graph outputs

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def tensor(self, name: str) -> TensorSpec:
        for spec in self.inputs + self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph '{self.name}' has no tensor named '{name}'")


@dataclass(frozen=True)
class ModelIO:
    """Both graphs of one model at one resolution and batch size."""

    avatar: GraphSpec  # once per avatar
    frame: GraphSpec  # once per frame
    resolution: int  # H = W
    batch: int  # B
    num_kp: int  # K
    jacobian: bool  # whether keypoints carry jacobians

    def graph(self, name: str) -> GraphSpec:
        if name == AVATAR_GRAPH:
            return self.avatar
        if name == FRAME_GRAPH:
            return self.frame
        raise KeyError(f"no graph named '{name}': expected '{AVATAR_GRAPH}' or '{FRAME_GRAPH}'")


def model_io(config: ModelConfig, resolution: int | None = None, batch: int = 1) -> ModelIO:
    """The I/O spec of ``config`` at ``resolution`` (default: the config's) and ``batch``."""
    from .generator import OcclusionAwareGenerator

    size = resolution or config.resolution
    c, k = config.num_channels, config.num_kp
    # Shapes of the avatar state come from running the encoder on the meta device: no
    # arithmetic here can drift from the network's own.
    with torch.device("meta"):
        generator = OcclusionAwareGenerator(config)
        features, small = generator.encode(torch.empty(batch, c, size, size))
    state = [
        TensorSpec(AVATAR_FEATURES, tuple(features.shape)),
        TensorSpec(AVATAR_SMALL, tuple(small.shape)),
        TensorSpec(AVATAR_KP, (batch, k, 2)),
    ]
    if config.estimate_jacobian:
        state.append(TensorSpec(AVATAR_JACOBIAN, (batch, k, 2, 2)))
    motion = [TensorSpec(MOTION_SCALE, (batch, k, 1)), TensorSpec(MOTION_OFFSET, (batch, k, 2))]
    if config.estimate_jacobian:
        motion.append(TensorSpec(MOTION_JACOBIAN, (batch, k, 2, 2)))
        motion.append(TensorSpec(MOTION_JACOBIAN_OFFSET, (batch, k, 2, 2)))
    frame_out = [
        TensorSpec(PREDICTION, (batch, c, size, size)),
        TensorSpec(DRIVING_KP, (batch, k, 2)),
    ]
    if config.estimate_jacobian:
        frame_out.append(TensorSpec(DRIVING_JACOBIAN, (batch, k, 2, 2)))
    return ModelIO(
        avatar=GraphSpec(AVATAR_GRAPH, (TensorSpec(AVATAR, (batch, c, size, size)),), tuple(state)),
        frame=GraphSpec(
            FRAME_GRAPH,
            (TensorSpec(DRIVING, (batch, c, size, size)), *state, *motion),
            tuple(frame_out),
        ),
        resolution=size,
        batch=batch,
        num_kp=k,
        jacobian=config.estimate_jacobian,
    )
