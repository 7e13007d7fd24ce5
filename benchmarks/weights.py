"""Checkpoints made for int8 tests and benchmarks, from an existing FOMM checkpoint.

:func:`outlier_channels` is the stress case of the int8 check: trained CNNs often have a few
activation channels far larger than the rest, and per-tensor activation scales then round the
other channels away. It multiplies the batch-norm scale and shift of a few channels by ``k``
ahead of a convolution whose weights on those channels are divided by ``k``: ReLU(k x) =
k ReLU(x) for k > 0, so the float function is unchanged (to float rounding) while those
activations are ``k`` times the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: (batch norm, the convolution that reads its ReLU output) in the generator's bottleneck
#: residual blocks: norm1 -> ReLU -> conv1 -> norm2 -> ReLU -> conv2.
STRESS_PAIRS = (("norm1", "conv1"), ("norm2", "conv2"))


def _blocks(generator: dict[str, Any]) -> list[str]:
    """``bottleneck.rN`` prefixes of the generator's residual blocks."""
    names = {k.rsplit(".", 2)[0] for k in generator if k.startswith("bottleneck.r")}
    return sorted(names)


def outlier_channels(
    checkpoint: dict[str, Any], k: float = 100.0, channels: Sequence[int] = (0, 1, 2)
) -> dict[str, Any]:
    """A copy of ``checkpoint`` (FOMM layout: ``generator`` and ``kp_detector`` state dicts)
    whose generator has ``channels`` of each :data:`STRESS_PAIRS` pair of every bottleneck
    block scaled by ``k`` (see the module doc). The fp32 function is the same; per-tensor
    int8 is not."""
    if k <= 0:
        raise ValueError(f"k must be positive (ReLU commutes with positive scales), got {k}")
    generator = dict(checkpoint["generator"])
    picked = list(channels)
    blocks = _blocks(generator)
    if not blocks:
        raise ValueError("the checkpoint's generator has no bottleneck residual blocks")
    for block in blocks:
        for norm, conv in STRESS_PAIRS:
            for name in ("weight", "bias"):
                tensor = generator[f"{block}.{norm}.{name}"].clone()
                tensor[picked] *= k
                generator[f"{block}.{norm}.{name}"] = tensor
            weight = generator[f"{block}.{conv}.weight"].clone()  # out x in x kh x kw
            weight[:, picked] /= k
            generator[f"{block}.{conv}.weight"] = weight
    return {**checkpoint, "generator": generator}


def write_outlier_checkpoint(source: Path, target: Path, k: float = 100.0) -> Path:
    """:func:`outlier_channels` of the checkpoint file ``source``, saved as ``target``."""
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    torch.save(outlier_channels(checkpoint, k), target)
    return target


def he_normal(model: Any, seed: int = 0) -> None:
    """He-normal convolution weights (ReLU gain), zero biases: the initialisation a trained
    FOMM started from (PyTorch's default is 3x smaller per layer). The keypoint detector's
    jacobian head keeps FOMM's own initialisation (zero weights, identity bias), as training
    starts from it: random jacobians far from identity turn every keypoint's local motion into
    a random affine map (their inverses blow up), so the deformation leaves the avatar and the
    output is chaotic, as no trained network is."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    jacobian_head = getattr(getattr(model, "kp_detector", None), "jacobian", None)
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or module is jacobian_head:
            continue
        fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        std = (2.0 / fan_in) ** 0.5
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if module.bias is not None:
                module.bias.zero_()


def reestimate_batch_norm(model: Any, sources: Any, driving: Any) -> None:
    """Batch-norm scales measured on faces: each layer's running variance becomes the mean
    square of its input over ``driving`` (N x 3 x R x R in [0, 1]) animated from ``sources``
    (M x 3 x R x R), its running mean zero. Activations then keep about unit size through the
    layers instead of shrinking or growing, as in a trained network, while ReLU still sees
    mostly positive inputs. Centring too (the per-frame mean subtracted at every layer) makes
    each ReLU cut its input in half at random: at vox-256 the output then swings with the
    smallest change of the input (int8 rounding alone gave 11.5 dB), which no trained network
    does."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    squares: dict[nn.Module, list[torch.Tensor]] = {norm: [] for norm in norms}

    def this_frame(norm: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        """Normalize by this frame's own mean square (as training mode normalizes by the
        batch's statistics), so every layer is measured on rescaled inputs in one pass."""
        square = inputs[0].double().square().mean(dim=(0, 2, 3))  # C
        squares[norm].append(square)
        norm.running_var.copy_(square.clamp_min(1e-12).float())

    for norm in norms:
        norm.reset_running_stats()  # mean 0, variance 1
    hooks = [norm.register_forward_pre_hook(this_frame) for norm in norms]
    try:
        with torch.no_grad():
            _animate_all(model, sources, driving)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for norm in norms:
            if squares[norm]:
                norm.running_var.copy_(torch.stack(squares[norm]).mean(0).clamp_min(1e-12).float())


def _animate_all(model: Any, sources: Any, driving: Any) -> None:
    """Run the network on every (source, driving frame) pair: sources M x 3 x R x R, driving
    N x 3 x R x R."""
    for s in range(sources.shape[0]):
        source = sources[s : s + 1]
        kp_source = model.keypoints(source)
        for d in range(driving.shape[0]):
            model.animate(source, kp_source, model.keypoints(driving[d : d + 1]))


def trained_like_checkpoint(config: Any, faces: Any, seed: int = 0) -> dict[str, Any]:
    """Random weights that behave like a trained network for speed and int8 rounding: He-normal
    convolutions, FOMM's identity jacobian head and batch-norm scales measured on ``faces``
    (K x 3 x R x R in [0, 1]; the first one is the avatar, the rest drive it). Not an accuracy
    model: the frames it makes are not faces."""
    from export.model import build_model

    model = build_model(config)
    he_normal(model, seed)
    reestimate_batch_norm(model, faces[:1], faces[1:])
    return {
        "generator": model.generator.state_dict(),
        "kp_detector": model.kp_detector.state_dict(),
    }
