"""``--precision auto``: int8 where it passes its check against fp32 on held-out frames, fp32
with the figures where it does not (a checkpoint with outlier activation channels)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.weights import outlier_channels, write_outlier_checkpoint
from engines import CalibrationFrames, EngineError, EngineOptions, create_engine
from engines.int8_auto import int8_unavailable
from engines.int8_verify import MAX_MEAN_GREY, MIN_PSNR_DB, judge, split_frames
from export.config import load_config
from export.model import build_model
from tests.conftest import Golden, load_golden

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _frames(golden: Golden) -> CalibrationFrames:
    return CalibrationFrames(
        (_uint8(golden.arrays["source"]),),
        tuple(_uint8(d) for d in golden.arrays["driving"]),
        "golden frames",
    )


def test_check_bounds_and_held_out_frames() -> None:
    assert judge([45.0, 40.0], 1.0, 1e-6, 2).passed
    low = judge([45.0, MIN_PSNR_DB - 0.1], 1.0, 0.0, 2)
    assert not low.passed and "worst-frame PSNR" in low.line()
    assert not judge([45.0], MAX_MEAN_GREY + 0.1, 0.0, 1).passed
    assert not judge([45.0], 1.0, 0.02, 1).passed
    image = np.zeros((8, 8, 3), np.uint8)
    frames = CalibrationFrames((image,), tuple(np.full_like(image, i) for i in range(6)), "x")
    calibrate, check = split_frames(frames)
    assert [int(f[0, 0, 0]) for f in calibrate.driving] == [0, 1, 2, 3]
    assert [int(f[0, 0, 0]) for f in check.driving] == [4, 5]  # never calibrated on
    with pytest.raises(EngineError, match="at least 2 driving frames"):
        split_frames(CalibrationFrames((image,), (image,)))


def test_outlier_checkpoint_keeps_the_fp32_function(tiny_golden: Golden) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    checkpoint = torch.load(tiny_golden.checkpoint, map_location="cpu", weights_only=False)
    source = torch.from_numpy(tiny_golden.arrays["source"]).permute(2, 0, 1)[None].float()
    driving = torch.from_numpy(tiny_golden.arrays["driving"][3]).permute(2, 0, 1)[None].float()
    frames, activations = [], []
    for state in (checkpoint, outlier_channels(checkpoint, k=100.0)):
        model = build_model(config)
        model.generator.load_state_dict(state["generator"])
        model.kp_detector.load_state_dict(state["kp_detector"])
        conv1 = model.generator.bottleneck.r0.conv1
        hook = conv1.register_forward_hook(lambda m, i, o: activations.append(i[0]))
        with torch.no_grad():
            out = model.animate(source, model.keypoints(source), model.keypoints(driving))
        hook.remove()
        frames.append(out.prediction)
    assert float((frames[0] - frames[1]).abs().max()) < 1e-4  # the same fp32 function
    stressed = activations[1]  # B x C x H x W, input of the first bottleneck conv
    assert stressed[:, :3].abs().max() > 10 * stressed[:, 3:].abs().max()  # a few huge channels


def test_auto_runs_fp32_when_int8_fails_its_check(
    tiny_golden: Golden, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    stress = write_outlier_checkpoint(tiny_golden.checkpoint, tmp_path / "stress.pth.tar")
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="openvino", precision="auto", cache_dir=tmp_path / "cache")
    with create_engine(stress, config, options, _frames(tiny_golden)) as engine:
        assert engine.precision == "fp32"
        reason = engine.selection_reason
    line = next(x for x in capfd.readouterr().err.splitlines() if "precision auto" in x)
    for text in (reason, line):
        assert "precision auto: fp32, because int8 failed its check" in text
        assert "worst-frame PSNR" in text and "dB" in text and "grey levels" in text
    with create_engine(stress, config, options) as engine:  # the cached verdict decides
        assert engine.precision == "fp32" and "failed its check" in engine.selection_reason
    assert "calibrating" not in capfd.readouterr().err


@pytest.mark.parametrize("name", ["tiny64", pytest.param("vox-small256", marks=pytest.mark.slow)])
def test_auto_picks_int8_on_the_goldens(
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    golden = load_golden(name)
    config = load_config(golden.config, resolution=golden.resolution)
    options = EngineOptions(backend="auto", precision="auto", cache_dir=tmp_path / "cache")
    with create_engine(golden.checkpoint, config, options, _frames(golden)) as engine:
        assert engine.precision == "int8"
        assert engine.int8_verdict.passed and engine.int8_verdict.worst_psnr_db >= MIN_PSNR_DB
        reason = engine.selection_reason
    err = capfd.readouterr().err
    assert "precision auto: int8, verified against fp32" in reason
    assert f"PSNR {engine.int8_verdict.mean_psnr_db:.1f} dB mean" in err
    again = EngineOptions(
        backend="auto", precision="auto", cache_dir=tmp_path / "cache", recalibrate_int8=True
    )
    with create_engine(golden.checkpoint, config, again, _frames(golden)) as engine:
        assert engine.precision == "int8"
    assert "dropped the cached int8 model" in capfd.readouterr().err


def test_auto_is_fp32_where_int8_does_not_run(tiny_golden: Golden, tmp_path: Path) -> None:
    assert "--backend torch runs fp32" in int8_unavailable(EngineOptions(backend="torch"))
    assert int8_unavailable(EngineOptions(device="gpu")) is not None
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="torch", precision="auto", cache_dir=tmp_path)
    with create_engine(tiny_golden.checkpoint, config, options) as engine:
        assert engine.precision == "fp32" and engine.backend == "torch"
        assert "precision auto: fp32, because int8 runs in the openvino backend" in (
            engine.selection_reason
        )


def test_scopes_keep_less_and_less_float(tiny_golden: Golden, tmp_path: Path) -> None:
    from engines.cache import ArtifactCache, onnx_artifacts
    from engines.int8 import float_node_names
    from export.iospec import model_io

    config = load_config(tiny_golden.config, resolution=64)
    io = model_io(config, 64, 1)
    paths, _ = onnx_artifacts(
        ArtifactCache(tmp_path), tiny_golden.checkpoint, config, 64, 1, "fp32"
    )
    frame = paths[io.frame.name]
    conv, middle, nncf = (set(float_node_names(frame, s)) for s in ("conv", "middle", "nncf"))
    assert nncf < middle < conv  # each scope quantizes more
    assert all("Conv" not in n or n in nncf for n in middle)  # only kp convolutions stay float
    with pytest.raises(ValueError, match="unknown int8 scope"):
        float_node_names(frame, "everything")


def test_auto_tells_trained_like_weights_from_their_stress_copy(
    tiny_golden: Golden, tmp_path: Path
) -> None:
    """The benchmark's trained-like random weights (identity jacobian head, batch-norm scales
    measured on the golden faces) pass the int8 check; the same network with a few outlier
    activation channels, an identical fp32 function, fails it and runs fp32."""
    from benchmarks.int8_scopes import write_weights

    config = load_config(tiny_golden.config, resolution=64)
    faces = np.concatenate([tiny_golden.arrays["source"][None], tiny_golden.arrays["driving"]])
    faces = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), np.float32)  # N x 3 x R x R
    chosen = {}
    for kind in ("trained-like", "stress"):
        checkpoint = write_weights(kind, config, faces, tmp_path, 0)
        options = EngineOptions(
            backend="openvino", precision="auto", cache_dir=tmp_path / f"cache-{kind}"
        )
        with create_engine(checkpoint, config, options, _frames(tiny_golden)) as engine:
            chosen[kind] = (engine.precision, engine.selection_reason)
    assert chosen["trained-like"][0] == "int8", chosen["trained-like"][1]
    assert chosen["stress"][0] == "fp32", chosen["stress"][1]
    assert "int8 failed its check" in chosen["stress"][1]
    worst = re.search(r"PSNR [\d.]+ dB mean, ([\d.]+) dB worst", chosen["stress"][1])
    assert worst is not None and float(worst[1]) < MIN_PSNR_DB - 10  # caught by a wide margin
