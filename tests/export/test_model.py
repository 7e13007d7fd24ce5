"""The FOMM modules reproduce the reference implementation's golden arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.checkpoint import load_model
from export.config import PRESETS, load_config
from export.model import FOMM, Keypoints
from export.motion import apply_motion, relative_motion
from tests.conftest import Golden, shared_path

TOL = 1e-4


def _nchw(images: np.ndarray) -> torch.Tensor:
    """T x H x W x C (or H x W x C) -> T x C x H x W."""
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _max_err(actual: torch.Tensor | np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max())


@pytest.fixture
def run(golden: Golden):
    """The golden's model and its outputs, computed the reference demo's way."""
    config = load_config(golden.config, resolution=golden.resolution)
    model = load_model(golden.checkpoint, config)
    a = golden.arrays
    source, driving = _nchw(a["source"]), _nchw(a["driving"])
    t = driving.shape[0]
    with torch.no_grad():
        src = model.keypoints(source)
        drv = model.keypoints(driving)
        motion = relative_motion(
            src.value.numpy(),
            src.jacobian.numpy(),
            drv.value[:1].numpy(),
            drv.jacobian[:1].numpy(),
            adapt_scale=True,
        )
        value, jacobian = apply_motion(
            drv.value,
            drv.jacobian,
            torch.from_numpy(motion.scale),
            torch.from_numpy(motion.offset),
            torch.from_numpy(motion.jacobian),
            torch.from_numpy(motion.jacobian_offset),
        )
        src_t = Keypoints(src.value.expand(t, -1, -1), src.jacobian.expand(t, -1, -1, -1))
        sources = source.expand(t, -1, -1, -1)
        relative = model.animate(sources, src_t, Keypoints(value, jacobian))
        absolute = model.animate(sources, src_t, drv)
    return {
        "model": model,
        "src": src,
        "drv": drv,
        "norm": (value, jacobian),
        "relative": relative,
        "absolute": absolute,
    }


def test_keypoints_match_golden(golden: Golden, run) -> None:
    a = golden.arrays
    assert _max_err(run["src"].value, a["kp_source_value"]) <= TOL
    assert _max_err(run["src"].jacobian, a["kp_source_jacobian"]) <= TOL
    assert _max_err(run["drv"].value, a["kp_driving_value"]) <= TOL
    assert _max_err(run["drv"].jacobian, a["kp_driving_jacobian"]) <= TOL


def test_relative_keypoints_match_golden(golden: Golden, run) -> None:
    value, jacobian = run["norm"]
    assert _max_err(value, golden.arrays["kp_norm_value"]) <= TOL
    assert _max_err(jacobian, golden.arrays["kp_norm_jacobian"]) <= TOL


def test_dense_motion_maps_match_golden(golden: Golden, run) -> None:
    out = run["relative"]
    assert _max_err(out.motion.mask, golden.arrays["mask"]) <= TOL
    assert _max_err(out.motion.occlusion_map, golden.arrays["occlusion_map"]) <= TOL
    assert _max_err(out.deformed.permute(0, 2, 3, 1), golden.arrays["deformed"]) <= TOL


def test_predictions_match_golden(golden: Golden, run) -> None:
    relative = run["relative"].prediction.permute(0, 2, 3, 1)
    absolute = run["absolute"].prediction.permute(0, 2, 3, 1)
    assert _max_err(relative, golden.arrays["prediction"]) <= TOL
    assert _max_err(absolute, golden.arrays["kp_abs_prediction"]) <= TOL
    # The two modes differ: a test that passes for both would not tell them apart.
    assert _max_err(relative, golden.arrays["kp_abs_prediction"]) > 10 * TOL


def test_split_generator_equals_unsplit(golden: Golden, run) -> None:
    """Source caching: encode once, decode per frame == the original forward."""
    model: FOMM = run["model"]
    source = _nchw(golden.arrays["source"])
    value, jacobian = run["norm"]
    src = run["src"]
    with torch.no_grad():
        features, small = model.generator.encode(source)
        for i in range(value.shape[0]):
            prediction, _ = model.generator.decode(
                features, small, value[i : i + 1], jacobian[i : i + 1], src.value, src.jacobian
            )
            expected = run["relative"].prediction[i : i + 1]
            assert _max_err(prediction, expected.numpy()) <= 1e-5


def test_align_corners_matters(golden: Golden, run, monkeypatch) -> None:
    """A half-pixel warp (align_corners=False) must be caught by the golden comparison."""
    import export.blocks as blocks

    original = torch.nn.functional.grid_sample

    def misaligned(image, grid, **kwargs):
        kwargs["align_corners"] = False
        return original(image, grid, **kwargs)

    monkeypatch.setattr(blocks.F, "grid_sample", misaligned)
    model: FOMM = run["model"]
    source = _nchw(golden.arrays["source"])
    value, jacobian = run["norm"]
    src = run["src"]
    with torch.no_grad():
        out = model.animate(source, src, Keypoints(value[:1], jacobian[:1]))
    assert _max_err(out.deformed.permute(0, 2, 3, 1), golden.arrays["deformed"][:1]) > 1e-3


@pytest.mark.parametrize("name", ["vox-256", "mgif-256"])
def test_state_dict_manifest_loads_strict(name: str) -> None:
    """Every key and shape of the official checkpoints loads with strict=True."""
    manifest = json.loads(shared_path("fomm", "state-dict-manifest.json").read_text())[name]
    with torch.device("meta"):
        model = FOMM(PRESETS[name])
    for part in ("generator", "kp_detector"):
        module = getattr(model, part)
        expected = {k: tuple(v) for k, v in manifest[part].items()}
        actual = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert actual == expected
        state = {k: torch.zeros(v) for k, v in expected.items()}
        fresh = FOMM(PRESETS[name])
        getattr(fresh, part).load_state_dict(state, strict=True)


def test_parameter_counts_match_spec() -> None:
    """FOMM.md: generator 45.6 M parameters, kp detector 14.2 M."""
    with torch.device("meta"):
        model = FOMM(PRESETS["vox-256"])
    generator = sum(p.numel() for p in model.generator.parameters())
    detector = sum(p.numel() for p in model.kp_detector.parameters())
    assert round(generator / 1e6, 1) == 45.6
    assert round(detector / 1e6, 1) == 14.2


def test_model_stays_in_eval_mode() -> None:
    model = FOMM(PRESETS["vox-256"])
    model.train()
    assert not any(m.training for m in model.modules())
