"""The engine contract, for every backend x precision x device: both goldens through
set_avatar / set_motion / animate (relative and absolute motion) and run(), compared with the
reference implementation's arrays.

Cases this machine cannot run are collected and skipped with the reason (no CUDA GPU, no
onnxruntime-gpu, no tensorrt, no openvino), so the parametrization is the same everywhere.
The ``double`` cases run the tensorrt backend against the TensorRT/CUDA test double
(tests/engines/fake_tensorrt.py, the exported graphs in ONNX Runtime on the CPU), so its
binding, capture and staging meet the contract everywhere; ``compile`` cases use
torch.compile.

int8 (OpenVINO, NNCF-quantized frame graph) is calibrated on the golden's own avatar and
driving frames, as the live loop calibrates on the user's. Its keypoints must stay within the
fp32 tolerance (the keypoint detector and motion math are kept in float by design); frames
within :data:`INT8_FRAMES` of fp32. int8 runs on tiny64 only: calibrating the
256-pixel golden would add half a minute to CI for no extra coverage of the code path.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import CalibrationFrames, EngineOptions, create_engine
from export.config import load_config
from export.motion import MotionTransfer, absolute_motion, relative_motion
from tests.conftest import Golden


@dataclass(frozen=True)
class Tolerance:
    """Bounds on the abs error of frames and keypoints against the reference arrays."""

    max: float  # largest abs error
    mean: float | None  # mean abs error (None: the max bound is the tighter one)


# Per (where the arithmetic runs, precision). Measured on the goldens (vox-small256 is the
# worst; tiny64 is ~20x smaller):
# - CPU fp32: two valid fp32 convolution algorithms (oneDNN and PyTorch's native ones) and a
#   float64 run differ from the reference by at most 5.5e-5 (mean 2.1e-6); the bound stays
#   the original 1e-4 and is never loosened.
# - CUDA fp32: cuDNN picks among more algorithms (Winograd, FFT, implicit GEMM with split
#   reductions) and TensorRT fuses and reorders; 5e-4 is ~10x the CPU algorithm spread, and
#   the mean bound 1e-5 is ~5x its mean, so TF32 (about 1e-2 max and 1e-3 mean on these
#   goldens) still fails both. Not yet measured on a GPU: `python -m benchmarks.gpu_check`
#   reports the errors there.
# - fp16 (mixed precision, float32 keypoints): half-precision convolutions, same everywhere.
TOLERANCES = {
    ("cpu", "fp32"): Tolerance(max=1e-4, mean=None),
    ("cuda", "fp32"): Tolerance(max=5e-4, mean=1e-5),
    ("cpu", "fp16"): Tolerance(max=8 / 255, mean=2 / 255),
    ("cuda", "fp16"): Tolerance(max=8 / 255, mean=2 / 255),
    # int8 keypoints: the keypoint detector and motion math stay float32, so fp32's bound.
    ("cpu", "int8"): Tolerance(max=1e-4, mean=None),
}
# int8 frames vs the fp32 reference (random weights, tiny64: measured mean 0.0025, max 0.02).
INT8_FRAMES = Tolerance(max=16 / 255, mean=2 / 255)

gpu = pytest.mark.gpu
trt = pytest.mark.tensorrt
slow = pytest.mark.slow

# (backend, device, precision, cuda_graph, mode); mode: "" plain, "double" the TensorRT test
# double, "compile" torch.compile.
CASES = [
    pytest.param("torch", "cpu", "fp32", False, "", id="torch-cpu-fp32"),
    pytest.param("onnxruntime", "cpu", "fp32", False, "", id="onnxruntime-cpu-fp32"),
    pytest.param("onnxruntime", "cpu", "fp16", False, "", id="onnxruntime-cpu-fp16"),
    pytest.param("openvino", "cpu", "fp32", False, "", id="openvino-cpu-fp32"),
    pytest.param("openvino", "cpu", "int8", False, "", id="openvino-cpu-int8"),
    pytest.param("tensorrt", "cuda", "fp32", False, "double", id="tensorrt-double-fp32"),
    pytest.param("tensorrt", "cuda", "fp16", True, "double", id="tensorrt-double-fp16-cudagraph"),
    pytest.param("torch", "cpu", "fp32", False, "compile", id="torch-cpu-fp32-compile", marks=slow),
    pytest.param("torch", "cuda", "fp32", False, "", id="torch-cuda-fp32", marks=gpu),
    pytest.param("torch", "cuda", "fp16", False, "", id="torch-cuda-fp16", marks=gpu),
    pytest.param("torch", "cuda", "fp32", True, "", id="torch-cuda-fp32-cudagraph", marks=gpu),
    pytest.param(
        "torch", "cuda", "fp32", False, "compile", id="torch-cuda-fp32-compile", marks=gpu
    ),
    pytest.param(
        "torch", "cuda", "fp16", False, "compile", id="torch-cuda-fp16-compile", marks=gpu
    ),
    pytest.param("onnxruntime", "cuda", "fp32", False, "", id="onnxruntime-cuda-fp32", marks=gpu),
    pytest.param("onnxruntime", "cuda", "fp16", False, "", id="onnxruntime-cuda-fp16", marks=gpu),
    pytest.param("tensorrt", "cuda", "fp32", False, "", id="tensorrt-fp32", marks=[gpu, trt]),
    pytest.param("tensorrt", "cuda", "fp16", False, "", id="tensorrt-fp16", marks=[gpu, trt]),
    pytest.param(
        "tensorrt", "cuda", "fp16", True, "", id="tensorrt-fp16-cudagraph", marks=[gpu, trt]
    ),
]


def _skip_reason(backend: str, device: str, mode: str, golden: str) -> str | None:
    if mode == "double":
        if importlib.util.find_spec("onnxruntime") is None:
            return "the TensorRT test double runs the graphs in onnxruntime (not installed)"
        return None
    if mode == "compile" and device == "cpu" and golden != "tiny64":
        return "torch.compile on the CPU is checked on tiny64 only (compiling takes minutes)"
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


def _check(name: str, actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> None:
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    assert err.max() <= tolerance.max, f"{name}: max abs error {err.max():.3g} > {tolerance.max}"
    if tolerance.mean is not None:
        assert err.mean() <= tolerance.mean, (
            f"{name}: mean abs error {err.mean():.3g} > {tolerance.mean}"
        )


def test_tolerances_are_never_looser_on_the_cpu() -> None:
    assert TOLERANCES["cpu", "fp32"].max == 1e-4
    for precision in ("fp32", "fp16"):
        assert TOLERANCES["cpu", precision].max <= TOLERANCES["cuda", precision].max


@pytest.mark.parametrize(("backend", "device", "precision", "cuda_graph", "mode"), CASES)
def test_engine_matches_goldens(
    golden: Golden,
    backend: str,
    device: str,
    precision: str,
    cuda_graph: bool,
    mode: str,
    shared_engine_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = _skip_reason(backend, device, mode, golden.name)
    if precision == "int8" and golden.name != "tiny64":
        reason = "int8 calibration is tested on tiny64 (fast); the code path is the same"
    if reason:
        pytest.skip(reason)
    if mode == "double":
        from tests.engines.fake_tensorrt import FakeCuda, fake_tensorrt, install

        cuda = FakeCuda()
        install(monkeypatch, cuda, fake_tensorrt(cuda))
    # The double computes on the CPU: CPU bounds.
    tolerance = TOLERANCES["cpu" if mode == "double" else device.split(":")[0], precision]
    frame_tolerance = INT8_FRAMES if precision == "int8" else tolerance
    a = golden.arrays
    config = load_config(golden.config, resolution=golden.resolution)
    options = EngineOptions(
        backend=backend,
        precision=precision,
        device=device,
        cuda_graph=cuda_graph,
        compile=mode == "compile",
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
        if mode == "compile":
            assert engine.compiled and "torch.compile" in engine.selection_reason

        source = engine.set_avatar(_nchw(a["source"]))
        _check("kp_source_value", source.value, a["kp_source_value"], tolerance)
        _check("kp_source_jacobian", source.jacobian, a["kp_source_jacobian"], tolerance)

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
                frame_tolerance,
            )
            _check(
                f"kp_driving_value[{t}]",
                result.driving.value[0],
                a["kp_driving_value"][t],
                tolerance,
            )
            _check(
                f"kp_driving_jacobian[{t}]",
                result.driving.jacobian[0],
                a["kp_driving_jacobian"][t],
                tolerance,
            )

        # Per-keypoint scale and jacobian offset (the live loop's smoothing): each keypoint
        # a blend w * drv + (1 - w) * p. With p the golden's own keypoints of that frame the
        # blend is the frame's keypoints whatever w, so the golden frame must come out.
        relative = relative_motion(
            source.value, source.jacobian, reference.value, reference.jacobian, True
        )
        weight = np.linspace(0.15, 0.9, engine.io.num_kp, dtype=np.float32)[None, :, None]
        for t in (1, a["driving"].shape[0] - 1):
            p = a["kp_driving_value"][t][None].astype(np.float32)  # 1 x K x 2
            jp = a["kp_driving_jacobian"][t][None].astype(np.float32)  # 1 x K x 2 x 2
            engine.set_motion(
                MotionTransfer(
                    scale=relative.scale * weight,
                    offset=relative.offset + relative.scale * (1 - weight) * p,
                    jacobian=relative.jacobian * weight[..., None],
                    jacobian_offset=(1 - weight[..., None]) * (jp @ relative.jacobian),
                )
            )
            result = engine.animate(_nchw(a["driving"][t]))
            _check(
                f"blended prediction[{t}]",
                result.prediction[0].transpose(1, 2, 0),
                a["prediction"][t],
                frame_tolerance,
            )
        engine.set_motion(relative)

        # run(): named host arrays, without touching the session's avatar state.
        state = engine.run("avatar", {"avatar": _nchw(a["source"])})
        _check("run avatar_kp", state["avatar_kp"], a["kp_source_value"], tolerance)
        motion = absolute_motion(engine.io.num_kp, engine.io.jacobian)
        feeds = {
            "driving": _nchw(a["driving"][1]),
            **state,
            "motion_scale": motion.scale,
            "motion_offset": motion.offset,
            "motion_jacobian": motion.jacobian,
            "motion_jacobian_offset": motion.jacobian_offset,
        }
        frame = engine.run("frame", feeds)
        _check(
            "run prediction",
            frame["prediction"][0].transpose(1, 2, 0),
            a["kp_abs_prediction"][1],
            frame_tolerance,
        )
        last = a["driving"].shape[0] - 1
        result = engine.animate(_nchw(a["driving"][last]))
        _check(
            "prediction after run()",
            result.prediction[0].transpose(1, 2, 0),
            a["prediction"][last],
            frame_tolerance,
        )

        # Absolute motion: the driving keypoints unchanged.
        engine.set_motion(motion)
        for t in range(a["driving"].shape[0]):
            result = engine.animate(_nchw(a["driving"][t]))
            _check(
                f"kp_abs_prediction[{t}]",
                result.prediction[0].transpose(1, 2, 0),
                a["kp_abs_prediction"][t],
                frame_tolerance,
            )
    assert engine.closed
