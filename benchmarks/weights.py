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
