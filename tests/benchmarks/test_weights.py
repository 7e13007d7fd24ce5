"""Random weights that behave like a trained network: batch norm re-estimated on faces."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.weights import trained_like_checkpoint
from export.config import load_config
from export.model import build_model
from tests.conftest import Golden


def test_batch_norm_statistics_normalize_the_faces(tiny_golden: Golden) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    frames = np.concatenate([tiny_golden.arrays["source"][None], tiny_golden.arrays["driving"]])
    faces = torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous()
    state = trained_like_checkpoint(config, faces)
    model = build_model(config)
    model.generator.load_state_dict(state["generator"])
    model.kp_detector.load_state_dict(state["kp_detector"])
    normalized: list[torch.Tensor] = []
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.register_forward_hook(
            lambda m, i, o: normalized.append((i[0] - m.running_mean[None, :, None, None])
                                              / (m.running_var[None, :, None, None] + m.eps).sqrt())
        )  # fmt: skip
    with torch.no_grad():
        source = faces[:1]
        kp = model.keypoints(source)
        for d in range(1, faces.shape[0]):
            model.animate(source, kp, model.keypoints(faces[d : d + 1]))
    spread = torch.stack([x.std() for x in normalized])
    centre = torch.stack([x.mean().abs() for x in normalized])
    # Every layer sees inputs near zero mean and unit variance, as in a trained network;
    # PyTorch's initialisation with default statistics gives spreads of 0.015-0.22 here.
    assert float(spread.min()) > 0.3 and float(spread.max()) < 3
    assert float(centre.max()) < 0.5
