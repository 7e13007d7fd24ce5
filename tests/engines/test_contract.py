"""The engine contract, for every backend x precision x device: both goldens through
set_avatar / set_motion / animate (relative and absolute motion) and run(), compared with the
reference implementation's arrays.

Cases this machine cannot run are collected and skipped with the reason (no CUDA GPU, no
onnxruntime-gpu, no tensorrt, no openvino), so the parametrization is the same everywhere.

int8 (OpenVINO, NNCF-quantized frame graph) is calibrated on the golden's own avatar and
driving frames, as the live loop calibrates on the user's. Its keypoints must stay within the
fp32 tolerance (the keypoint detector and motion math are kept in float by design); frames
within :data:`INT8_MEAN` / :data:`INT8_MAX` of fp32. int8 runs on tiny64 only: calibrating the
256-pixel golden would add half a minute to CI for no extra coverage of the code path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import CalibrationFrames, EngineOptions, create_engine
from export.config import load_config
from export.motion import absolute_motion, relative_motion
from tests.conftest import Golden

FP32_MAX = 1e-4  # max abs error, fp32, on frames and keypoints
FP16_MEAN = 2 / 255  # mean abs error, fp16, on frames and keypoints
FP16_MAX = 8 / 255  # max abs error, fp16
# int8 frames vs the fp32 reference (random weights, tiny64: measured mean 0.0025, max 0.02).
INT8_MEAN = 2 / 255  # mean abs error per frame, int8
INT8_MAX = 16 / 255  # max abs error, int8

gpu = pytest.mark.gpu
trt = pytest.mark.tensorrt

# (backend, device, precision, cuda_graph)
CASES = [
    pytest.param("torch", "cpu", "fp32", False, id="torch-cpu-fp32"),
    pytest.param("onnxruntime", "cpu", "fp32", False, id="onnxruntime-cpu-fp32"),
    pytest.param("onnxruntime", "cpu", "fp16", False, id="onnxruntime-cpu-fp16"),
    pytest.param("openvino", "cpu", "fp32", False, id="openvino-cpu-fp32"),
    pytest.param("openvino", "cpu", "int8", False, id="openvino-cpu-int8"),
    pytest.param("torch", "cuda", "fp32", False, id="torch-cuda-fp32", marks=gpu),
    pytest.param("torch", "cuda", "fp16", False, id="torch-cuda-fp16", marks=gpu),
    pytest.param("torch", "cuda", "fp32", True, id="torch-cuda-fp32-cudagraph", marks=gpu),
    pytest.param("onnxruntime", "cuda", "fp32", False, id="onnxruntime-cuda-fp32", marks=gpu),
    pytest.param("onnxruntime", "cuda", "fp16", False, id="onnxruntime-cuda-fp16", marks=gpu),
    pytest.param("tensorrt", "cuda", "fp32", False, id="tensorrt-fp32", marks=[gpu, trt]),
    pytest.param("tensorrt", "cuda", "fp16", False, id="tensorrt-fp16", marks=[gpu, trt]),
    pytest.param("tensorrt", "cuda", "fp16", True, id="tensorrt-fp16-cudagraph", marks=[gpu, trt]),
]


def _skip_reason(backend: str, device: str) -> str | None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA GPU on this machine (PyTorch sees none)"
    if backend == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install 'avatarcam[cpu]')"
        if device.startswith("cuda"):
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime-gpu is not installed (pip install 'avatarcam[gpu]')"
    if backend == "openvino":
        for module in ("openvino", "nncf"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'avatarcam[cpu]')"
    if backend == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'avatarcam[gpu]')"
    return None


def _uint8(image: np.ndarray) -> np.ndarray:
    """H x W x C float in [0, 1] -> uint8 (calibration frames are 8-bit, like camera frames)."""
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _nchw(image: np.ndarray) -> np.ndarray:
    """H x W x C -> 1 x C x H x W."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def _check(name: str, actual: np.ndarray, expected: np.ndarray, precision: str) -> None:
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    if precision == "int8" and "prediction" in name:
        assert err.mean() <= INT8_MEAN, f"{name}: mean abs error {err.mean():.3g} > {INT8_MEAN}"
        assert err.max() <= INT8_MAX, f"{name}: max abs error {err.max():.3g} > {INT8_MAX}"
    elif precision in ("fp32", "int8"):  # int8 keypoints: the detector stays fp32
        assert err.max() <= FP32_MAX, f"{name}: max abs error {err.max():.3g} > {FP32_MAX}"
    else:
        assert err.mean() <= FP16_MEAN, f"{name}: mean abs error {err.mean():.3g} > {FP16_MEAN}"
        assert err.max() <= FP16_MAX, f"{name}: max abs error {err.max():.3g} > {FP16_MAX}"


@pytest.mark.parametrize(("backend", "device", "precision", "cuda_graph"), CASES)
def test_engine_matches_goldens(
    golden: Golden,
    backend: str,
    device: str,
    precision: str,
    cuda_graph: bool,
    shared_engine_cache: Path,
) -> None:
    reason = _skip_reason(backend, device)
    if precision == "int8" and golden.name != "tiny64":
        reason = "int8 calibration is tested on tiny64 (fast); the code path is the same"
    if reason:
        pytest.skip(reason)
    a = golden.arrays
    config = load_config(golden.config, resolution=golden.resolution)
    options = EngineOptions(
        backend=backend,
        precision=precision,
        device=device,
        cuda_graph=cuda_graph,
        cache_dir=shared_engine_cache,
    )
    calibration = CalibrationFrames(
        (_uint8(a["source"]),), tuple(_uint8(d) for d in a["driving"]), golden.name
    )
    with create_engine(golden.checkpoint, config, options, calibration=calibration) as engine:
        assert engine.backend == backend
        assert engine.precision == precision
        assert engine.device.startswith(device)
        assert backend in engine.selection_reason

        source = engine.set_avatar(_nchw(a["source"]))
        _check("kp_source_value", source.value, a["kp_source_value"], precision)
        _check("kp_source_jacobian", source.jacobian, a["kp_source_jacobian"], precision)

        # Relative motion against driving frame 0, as the reference demo does.
        reference = engine.animate(_nchw(a["driving"][0])).driving
        engine.set_motion(
            relative_motion(
                source.value, source.jacobian, reference.value, reference.jacobian, True
            )
        )
        for t in range(a["driving"].shape[0]):
            result = engine.animate(_nchw(a["driving"][t]))
            _check(
                f"prediction[{t}]",
                result.prediction[0].transpose(1, 2, 0),
                a["prediction"][t],
                precision,
            )
            _check(
                f"kp_driving_value[{t}]",
                result.driving.value[0],
                a["kp_driving_value"][t],
                precision,
            )
            _check(
                f"kp_driving_jacobian[{t}]",
                result.driving.jacobian[0],
                a["kp_driving_jacobian"][t],
                precision,
            )

        # run(): named host arrays, without touching the session's avatar state.
        state = engine.run("avatar", {"avatar": _nchw(a["source"])})
        _check("run avatar_kp", state["avatar_kp"], a["kp_source_value"], precision)
        motion = absolute_motion(engine.io.num_kp, engine.io.jacobian)
        feeds = {
            "driving": _nchw(a["driving"][1]),
            **state,
            "motion_scale": motion.scale,
            "motion_offset": motion.offset,
            "motion_jacobian": motion.jacobian,
        }
        frame = engine.run("frame", feeds)
        _check(
            "run prediction",
            frame["prediction"][0].transpose(1, 2, 0),
            a["kp_abs_prediction"][1],
            precision,
        )
        last = a["driving"].shape[0] - 1
        result = engine.animate(_nchw(a["driving"][last]))
        _check(
            "prediction after run()",
            result.prediction[0].transpose(1, 2, 0),
            a["prediction"][last],
            precision,
        )

        # Absolute motion: the driving keypoints unchanged.
        engine.set_motion(motion)
        for t in range(a["driving"].shape[0]):
            result = engine.animate(_nchw(a["driving"][t]))
            _check(
                f"kp_abs_prediction[{t}]",
                result.prediction[0].transpose(1, 2, 0),
                a["kp_abs_prediction"][t],
                precision,
            )
    assert engine.closed
