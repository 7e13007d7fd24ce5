"""Random weights that behave like a trained network: FOMM's identity jacobian head and
batch-norm scales measured on faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.weights import he_normal, trained_like_checkpoint
from export.blocks import make_coordinate_grid
from export.config import load_config
from export.model import FOMM, Keypoints, build_model
from export.motion import apply_motion, relative_motion
from tests.conftest import Golden


def _faces(golden: Golden) -> torch.Tensor:
    """The golden avatar then its driving frames: N x 3 x R x R in [0, 1]."""
    frames = np.concatenate([golden.arrays["source"][None], golden.arrays["driving"]])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous()


def _model(golden: Golden, faces: torch.Tensor) -> FOMM:
    config = load_config(golden.config, resolution=golden.resolution)
    state = trained_like_checkpoint(config, faces)
    model = build_model(config)
    model.generator.load_state_dict(state["generator"])
    model.kp_detector.load_state_dict(state["kp_detector"])
    return model


def test_batch_norm_scales_normalize_the_faces(tiny_golden: Golden) -> None:
    faces = _faces(tiny_golden)
    model = _model(tiny_golden, faces)
    sizes: list[float] = []
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert float(norm.running_mean.abs().max()) == 0  # scales only: ReLU inputs not centred
        norm.register_forward_pre_hook(
            lambda m, i: sizes.append(
                float((i[0].square().mean(dim=(0, 2, 3)) / (m.running_var + m.eps)).mean().sqrt())
            )
        )
    with torch.no_grad():
        source = faces[:1]
        kp = model.keypoints(source)
        for d in range(1, faces.shape[0]):
            model.animate(source, kp, model.keypoints(faces[d : d + 1]))
    # Every layer sees inputs of about unit size (root mean square after its scale), as in a
    # trained network; PyTorch's initialisation with default statistics gives 0.015-0.22 here.
    assert min(sizes) > 0.7 and max(sizes) < 1.4, (min(sizes), max(sizes))


def test_trained_like_jacobian_head_is_fomms_identity(tiny_golden: Golden) -> None:
    faces = _faces(tiny_golden)
    model = _model(tiny_golden, faces)
    with torch.no_grad():
        jacobian = model.keypoints(faces[1:2]).jacobian  # B x K x 2 x 2
    assert torch.allclose(jacobian, torch.eye(2).expand_as(jacobian), atol=1e-6)
    other = build_model(load_config(tiny_golden.config, resolution=64))
    he_normal(other)  # every other convolution is re-drawn
    assert float(other.kp_detector.kp.weight.detach().std()) > 0
    assert float(other.kp_detector.jacobian.weight.abs().max()) == 0


def test_trained_like_motion_stays_on_the_source(tiny_golden: Golden) -> None:
    """Driven by relative motion against the first driving frame, as the live loop drives it,
    the deformation moves each pixel by a few hundredths of the image (random jacobians
    gave 0.15-0.24, a random affine map per keypoint) and stays inside the avatar."""
    faces = _faces(tiny_golden)
    model = _model(tiny_golden, faces)
    with torch.no_grad():
        source = faces[:1]
        kp_source = model.keypoints(source)
        reference = model.keypoints(faces[1:2])
        transfer = relative_motion(
            kp_source.value.numpy(),
            kp_source.jacobian.numpy(),
            reference.value.numpy(),
            reference.jacobian.numpy(),
        )
        moves, outside = [], []
        for d in range(2, faces.shape[0]):
            driving = model.keypoints(faces[d : d + 1])
            value, jacobian = apply_motion(
                driving.value,
                driving.jacobian,
                torch.from_numpy(transfer.scale),
                torch.from_numpy(transfer.offset),
                torch.from_numpy(transfer.jacobian),
                torch.from_numpy(transfer.jacobian_offset),
            )
            grid = model.animate(source, kp_source, Keypoints(value, jacobian)).motion.deformation
            identity = make_coordinate_grid(grid.shape[1], grid.shape[2], grid.dtype, grid.device)
            moves.append(float((grid - identity).abs().mean()))  # B x h x w x 2 vs h x w x 2
            outside.append(float((grid.abs() > 1).float().mean()))
    assert max(moves) < 0.1, moves
    assert max(outside) < 0.07, outside


@pytest.mark.parametrize("seed", [0, 1])
def test_trained_like_weights_are_seeded(tiny_golden: Golden, seed: int) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    faces = _faces(tiny_golden)
    first = trained_like_checkpoint(config, faces, seed)
    again = trained_like_checkpoint(config, faces, seed)
    other = trained_like_checkpoint(config, faces, seed + 2)
    name = "bottleneck.r0.conv1.weight"
    assert torch.equal(first["generator"][name], again["generator"][name])
    assert not torch.equal(first["generator"][name], other["generator"][name])
