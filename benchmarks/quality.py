"""int8 quality report: the quantized engine against fp32, frame by frame, on the user's model.

``python -m benchmarks --precisions fp32,int8 --checkpoint CK`` runs the same backend at fp32
and int8 over the benchmark's driving frames (relative motion against frame 0, as the live loop
animates) and reports, per frame, the PSNR of the int8 frame against the fp32 frame and the
largest keypoint difference in pixels. Random weights give nearly constant frames, so only a
trained checkpoint makes this report meaningful; int8 stays opt-in until it has been checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from engines import CalibrationFrames, EngineOptions, create_engine
from export.config import ModelConfig
from export.motion import relative_motion

from .inputs import BenchInputs

#: Backends with an int8 mode.
INT8_BACKENDS = ("openvino",)


def _animate_all(engine: Any, inputs: BenchInputs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predictions (C x H x W) and driving keypoints (K x 2) of every driving frame."""
    avatar = engine.set_avatar(inputs.source)
    reference = engine.animate(inputs.driving[:1]).driving
    engine.set_motion(
        relative_motion(avatar.value, avatar.jacobian, reference.value, reference.jacobian)
    )
    frames, keypoints = [], []
    for index in range(inputs.driving.shape[0]):
        result = engine.animate(np.ascontiguousarray(inputs.driving[index : index + 1]))
        frames.append(result.prediction[0].astype(np.float64))
        keypoints.append(result.driving.value[0].astype(np.float64))
    return frames, keypoints


def psnr(actual: np.ndarray, expected: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf when identical)."""
    mse = float(np.mean((actual - expected) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def quality_report(
    checkpoint: Path,
    config: ModelConfig,
    inputs: BenchInputs,
    calibration: CalibrationFrames,
    backend: str,
    device: str,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """Per-frame PSNR and keypoint error of ``backend`` int8 against its fp32."""
    runs = {}
    for precision in ("fp32", "int8"):
        options = EngineOptions(
            backend=backend, precision=precision, device=device, cache_dir=cache_dir
        )
        with create_engine(checkpoint, config, options, calibration=calibration) as engine:
            runs[precision] = (_animate_all(engine, inputs), engine.describe())
    (ref_frames, ref_kp), ref_engine = runs["fp32"]
    (q_frames, q_kp), q_engine = runs["int8"]
    half = config.resolution / 2  # keypoints are in [-1, 1]
    frames = []
    for index, (a, b, ka, kb) in enumerate(zip(q_frames, ref_frames, q_kp, ref_kp, strict=True)):
        value = psnr(a, b)
        frames.append(
            {
                "frame": index,
                "psnr_db": None if math.isinf(value) else round(value, 2),
                "mean_abs": float(np.mean(np.abs(a - b))),
                "max_abs": float(np.max(np.abs(a - b))),
                "kp_error_px": float(np.max(np.abs(ka - kb)) * half),
            }
        )
    finite = [f["psnr_db"] for f in frames if f["psnr_db"] is not None]
    return {
        "backend": backend,
        "device": device,
        "reference": ref_engine,
        "engine": q_engine,
        "calibration": calibration.description,
        "frames": frames,
        "psnr_db_mean": round(float(np.mean(finite)), 2) if finite else None,
        "psnr_db_min": round(float(np.min(finite)), 2) if finite else None,
        "kp_error_px_max": max(f["kp_error_px"] for f in frames),
        "note": "int8 against fp32 of the same backend, relative motion against driving frame "
        "0; with random weights frames are nearly constant and PSNR says little",
    }


def quality_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines for one quality report."""
    if "skipped" in report:
        return [f"{report['backend']}: not measured ({report['skipped']})", ""]
    lines = [
        f"{report['engine']} against {report['reference']} (calibrated on "
        f"{report['calibration']}): mean PSNR {report['psnr_db_mean']} dB, worst "
        f"{report['psnr_db_min']} dB, largest keypoint error {report['kp_error_px_max']:.3f} px. "
        f"{report['note']}.",
        "",
        "| frame | PSNR dB | keypoint error px | mean abs error | max abs error |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in report["frames"]:
        db = "inf" if f["psnr_db"] is None else f"{f['psnr_db']:.2f}"
        lines.append(
            f"| {f['frame']} | {db} | {f['kp_error_px']:.3f} | {f['mean_abs']:.1e} | "
            f"{f['max_abs']:.1e} |"
        )
    return [*lines, ""]
