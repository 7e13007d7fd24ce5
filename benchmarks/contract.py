"""The engine contract on the golden data, as a measurement: for one engine variant and one
golden case, every output the session API and ``run()`` produce, compared with the reference
implementation's arrays (max and mean absolute error per output, PSNR of the frames).

The same sequence as ``tests/engines/test_contract.py``: set_avatar, relative motion against
driving frame 0, every driving frame, ``run()`` of both graphs (which must leave the session
alone), then absolute motion. Imports only numpy, PyTorch (through the engines) and PyYAML.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines import Engine, EngineOptions
from export.config import ModelConfig, load_config
from export.motion import absolute_motion, relative_motion

from .errors import BenchmarkError

GOLDEN_NAMES = ("tiny64", "vox-small256")

#: The EngineOptions field of the torch backend's compiled (torch.compile) mode. The compiled
#: variants run as soon as EngineOptions has this field; until then they are reported as not
#: available in this build. If the field gets another name, change it here only.
COMPILE_FIELD = "compile"

# Tolerances, absolute, on frames in [0, 1] and keypoints in [-1, 1]: the bounds of
# tests/engines/test_contract.py (see the measurements documented there), as (max, mean).
# fp32 on the CPU: 1e-4, never loosened. fp32 on CUDA: cuDNN's algorithm choice and TensorRT's
# fused kernels reorder float32 sums: 5e-4 max and 1e-5 mean, which TF32 (about 1e-2 max and
# 1e-3 mean on the goldens) and any wrong op or stale frame (1e-1 and more) still fail.
# fp16 (half-precision convolutions, float32 keypoints): 8/255 max and 2/255 mean everywhere.
FP32_BOUNDS = {"cpu": (1e-4, None), "cuda": (5e-4, 1e-5)}
FP16_MAX = 8 / 255
FP16_MEAN = 2 / 255


def tolerance(precision: str, device: str) -> dict[str, float | None]:
    """The bound on max and mean absolute error for ``precision`` on ``device``."""
    if precision == "fp32":
        high, mean = FP32_BOUNDS["cuda" if device.startswith("cuda") else "cpu"]
        return {"max_abs": high, "mean_abs": mean}
    return {"max_abs": FP16_MAX, "mean_abs": FP16_MEAN}


def compile_supported() -> bool:
    """Whether this build's EngineOptions has the compiled mode (see COMPILE_FIELD)."""
    return COMPILE_FIELD in {f.name for f in dataclasses.fields(EngineOptions)}


@dataclass(frozen=True)
class Variant:
    """One way of running the network: backend, precision and execution mode."""

    backend: str  # torch, onnxruntime or tensorrt
    precision: str  # fp32 or fp16
    cuda_graph: bool = False  # frame call captured in a CUDA graph
    compiled: bool = False  # torch.compile (torch backend only)

    @property
    def name(self) -> str:
        mode = "-cudagraph" if self.cuda_graph else "-compile" if self.compiled else ""
        return f"{self.backend}-{self.precision}{mode}"

    @property
    def eager(self) -> Variant:
        """The same backend and precision without CUDA graph or compilation."""
        return Variant(self.backend, self.precision)

    def options(self, device: str, batch: int, cache_dir: Path | None) -> EngineOptions:
        extra: dict[str, Any] = {COMPILE_FIELD: True} if self.compiled else {}
        return EngineOptions(
            backend=self.backend,
            precision=self.precision,
            device=device,
            batch=batch,
            cuda_graph=self.cuda_graph,
            cache_dir=cache_dir,
            **extra,
        )


def variants(device: str) -> list[Variant]:
    """Every variant worth checking on ``device``, eager ones before the modes built on them."""
    if not device.startswith("cuda"):
        return [
            Variant("torch", "fp32"),
            Variant("onnxruntime", "fp32"),
            Variant("onnxruntime", "fp16"),
        ]
    found = []
    for backend in ("torch", "onnxruntime", "tensorrt"):
        for precision in ("fp32", "fp16"):
            found.append(Variant(backend, precision))
    for backend in ("torch", "tensorrt"):
        for precision in ("fp32", "fp16"):
            found.append(Variant(backend, precision, cuda_graph=True))
    for precision in ("fp32", "fp16"):
        found.append(Variant("torch", precision, compiled=True))
    return found


@dataclass(frozen=True)
class GoldenCase:
    """One golden: checkpoint, config and the reference implementation's arrays."""

    name: str  # tiny64 or vox-small256
    checkpoint: Path  # NAME.pth.tar
    config: ModelConfig  # from NAME.yaml at the golden's resolution
    arrays: dict[str, np.ndarray]  # every array of NAME.npz

    @property
    def resolution(self) -> int:
        return int(self.arrays["source"].shape[0])


def load_golden_case(shared: Path, name: str) -> GoldenCase:
    """The golden ``name`` from ``shared``/fomm/golden; BenchmarkError when incomplete."""
    folder = shared / "fomm" / "golden"
    files = [folder / f"{name}{suffix}" for suffix in (".npz", ".pth.tar", ".yaml")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BenchmarkError(
            f"golden data missing: {', '.join(missing)}. Expected the shared test data "
            "(fomm/golden/*.npz, *.pth.tar, *.yaml) under --shared PATH (default: "
            "$AVATARCAM_SHARED, else ../shared beside the checkout)."
        )
    with np.load(files[0]) as data:
        arrays = {key: data[key] for key in data.files}
    resolution = int(arrays["source"].shape[0])
    return GoldenCase(name, files[1], load_config(files[2], resolution=resolution), arrays)


def _nchw(image: np.ndarray) -> np.ndarray:
    """H x W x C -> 1 x C x H x W."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def _hwc(prediction: np.ndarray) -> np.ndarray:
    """1 x C x H x W -> H x W x C."""
    return prediction[0].transpose(1, 2, 0)


def contract_outputs(engine: Engine, golden: GoldenCase) -> dict[str, np.ndarray]:
    """Run the contract sequence; every output by the golden array it must match."""
    a = golden.arrays
    frames = a["driving"].shape[0]
    out: dict[str, list[np.ndarray]] = {}

    def add(name: str, value: np.ndarray | None) -> None:
        if value is not None:
            out.setdefault(name, []).append(np.asarray(value, np.float32))

    source = engine.set_avatar(_nchw(a["source"]))
    add("kp_source_value", source.value)
    add("kp_source_jacobian", source.jacobian)
    reference = engine.animate(_nchw(a["driving"][0])).driving
    engine.set_motion(
        relative_motion(source.value, source.jacobian, reference.value, reference.jacobian, True)
    )
    for t in range(frames):
        result = engine.animate(_nchw(a["driving"][t]))
        add("prediction", _hwc(result.prediction))
        add("kp_driving_value", result.driving.value[0])
        add(
            "kp_driving_jacobian",
            None if result.driving.jacobian is None else result.driving.jacobian[0],
        )
    # run(): named host arrays; the session's avatar state must stay as it was.
    state = engine.run("avatar", {"avatar": _nchw(a["source"])})
    add("run:kp_source_value", state["avatar_kp"])
    motion = absolute_motion(engine.io.num_kp, engine.io.jacobian)
    feeds = {
        "driving": _nchw(a["driving"][1]),
        **state,
        "motion_scale": motion.scale,
        "motion_offset": motion.offset,
    }
    if engine.io.jacobian:
        feeds["motion_jacobian"] = motion.jacobian
        feeds["motion_jacobian_offset"] = motion.jacobian_offset
    add("run:kp_abs_prediction[1]", _hwc(engine.run("frame", feeds)["prediction"]))
    add("after-run:prediction[-1]", _hwc(engine.animate(_nchw(a["driving"][-1])).prediction))
    engine.set_motion(motion)
    for t in range(frames):
        add("kp_abs_prediction", _hwc(engine.animate(_nchw(a["driving"][t])).prediction))
    return {name: np.stack(values) for name, values in out.items()}


def expected_arrays(golden: GoldenCase) -> dict[str, np.ndarray]:
    """What each output of :func:`contract_outputs` must equal."""
    a = golden.arrays
    expected = {
        "kp_source_value": a["kp_source_value"],
        "kp_source_jacobian": a["kp_source_jacobian"],
        "prediction": a["prediction"],
        "kp_driving_value": a["kp_driving_value"],
        "kp_driving_jacobian": a["kp_driving_jacobian"],
        "run:kp_source_value": a["kp_source_value"][None],
        "run:kp_abs_prediction[1]": a["kp_abs_prediction"][1:2],
        "after-run:prediction[-1]": a["prediction"][-1:],
        "kp_abs_prediction": a["kp_abs_prediction"],
    }
    return {name: np.asarray(value, np.float32) for name, value in expected.items()}


def psnr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    """Peak signal-to-noise ratio of frames in [0, 1] (inf when identical)."""
    mse = float(np.mean((actual.astype(np.float64) - expected.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def compare(
    outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Max and mean absolute error of every output that has an expected array."""
    errors = {}
    for name, value in outputs.items():
        want = expected[name].reshape(value.shape)
        diff = np.abs(value.astype(np.float64) - want.astype(np.float64))
        errors[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return errors


FRAME_OUTPUTS = ("prediction", "kp_abs_prediction")


def judge(
    outputs: dict[str, np.ndarray],
    golden: GoldenCase,
    precision: str,
    device: str,
    eager: dict[str, np.ndarray] | None = None,
    fp32: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The contract result of one run: errors, PSNR, the verdict and why it failed.

    ``eager``: the outputs of the same backend and precision without CUDA graph or
    compilation (their largest difference is reported); ``fp32``: the outputs of the same
    backend in fp32 (an fp16 run's PSNR against them is reported)."""
    expected = expected_arrays(golden)
    missing = sorted(set(expected) - set(outputs) - {"kp_source_jacobian", "kp_driving_jacobian"})
    errors = compare(outputs, expected)
    bound = tolerance(precision, device)
    worst = max(errors.values(), key=lambda e: e["max_abs"])
    max_abs = worst["max_abs"]
    mean_abs = float(np.mean([errors[n]["mean_abs"] for n in FRAME_OUTPUTS if n in errors]))
    frames = np.concatenate([outputs[n].ravel() for n in FRAME_OUTPUTS if n in outputs])
    reference = np.concatenate([expected[n].ravel() for n in FRAME_OUTPUTS if n in outputs])
    problems = [f"output {name} missing" for name in missing]
    for name, error in errors.items():
        if not math.isfinite(error["max_abs"]) or error["max_abs"] > bound["max_abs"]:
            problems.append(
                f"{name}: max abs error {error['max_abs']:.3g} > {bound['max_abs']:.3g}"
            )
        if bound["mean_abs"] is not None and error["mean_abs"] > bound["mean_abs"]:
            problems.append(
                f"{name}: mean abs error {error['mean_abs']:.3g} > {bound['mean_abs']:.3g}"
            )
    result: dict[str, Any] = {
        "status": "fail" if problems else "pass",
        "max_abs": max_abs,
        "mean_abs": mean_abs,
        "psnr_db": psnr_db(frames, reference),
        "tolerance": bound,
        "errors": errors,
        "problems": problems,
        "vs_eager_max_abs": None,
        "psnr_vs_fp32_db": None,
    }
    if eager is not None:
        result["vs_eager_max_abs"] = max(
            float(np.abs(outputs[n].astype(np.float64) - eager[n]).max())
            for n in outputs
            if n in eager
        )
    if fp32 is not None and all(n in fp32 for n in FRAME_OUTPUTS if n in outputs):
        same = np.concatenate([fp32[n].ravel() for n in FRAME_OUTPUTS if n in outputs])
        result["psnr_vs_fp32_db"] = psnr_db(frames, same)
    return result
