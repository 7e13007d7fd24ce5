"""Shared fixtures: the reference data in ../shared and the golden checkpoints.

Tests that need ../shared skip when it is missing on a developer machine, and fail under
``CI=true``: CI must never pass by skipping the tests that matter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AVATARCAM_SHARED", ROOT.parent / "shared"))
GOLDEN_NAMES = ("tiny64", "vox-small256")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Seed torch and NumPy before every test: random weights and inputs are the same each run."""
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


def shared_path(*parts: str) -> Path:
    """Path of a file under ../shared; skip (fail under CI=true) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"shared test data {path} is missing (set AVATARCAM_SHARED to its folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Golden:
    """One golden case: checkpoint, config and the reference implementation's arrays."""

    name: str  # tiny64 or vox-small256
    checkpoint: Path  # NAME.pth.tar
    config: Path  # NAME.yaml
    arrays: dict[str, np.ndarray]  # every array of NAME.npz

    @property
    def resolution(self) -> int:
        return int(self.arrays["source"].shape[0])


_golden_cache: dict[str, Golden] = {}


def load_golden(name: str) -> Golden:
    if name not in _golden_cache:
        folder = shared_path("fomm", "golden")
        npz = shared_path("fomm", "golden", f"{name}.npz")
        with np.load(npz) as data:
            arrays = {key: data[key] for key in data.files}
        _golden_cache[name] = Golden(
            name=name,
            checkpoint=folder / f"{name}.pth.tar",
            config=folder / f"{name}.yaml",
            arrays=arrays,
        )
    return _golden_cache[name]


@pytest.fixture(params=GOLDEN_NAMES)
def golden(request: pytest.FixtureRequest) -> Golden:
    """Each golden case in turn."""
    return load_golden(request.param)


@pytest.fixture
def tiny_golden() -> Golden:
    """The small 64x64 golden case, for tests that need a model but not every model."""
    return load_golden("tiny64")
