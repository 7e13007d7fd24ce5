"""The check that makes int8 safe to turn on by default: the quantized frame graph against the
float one, on frames of the user's own run that calibration did not see.

:func:`split_frames` keeps the last third of the driving frames (at least one) out of
calibration; :func:`verify` animates each avatar with each of them in both graphs, under the
relative motion the live loop uses, and measures, per frame, the PSNR of the int8 frame against
the fp32 one, the mean absolute difference in grey levels, and the largest driving-keypoint
difference. The :class:`Verdict` passes when every figure is inside its bound:

- **worst-frame PSNR >= 30 dB** (an RMS difference of 8 grey levels on the worst frame). Measured
  with the Conv/GroupConv/Add scope: 35.2 dB on the vox-small256 golden (3.25 grey levels mean
  difference), 48.3 dB on tiny64, 35.0 dB mean on a random He-normal vox-256 checkpoint (issue
  15); a checkpoint with a few activation channels 100x the rest (same fp32 function,
  :func:`benchmarks.weights.outlier_channels`) gave 25.3 dB on tiny64 and 10.1 dB at vox-256
  (issue 15): visibly broken. 30 dB sits 5 dB under the worst healthy case and over every broken
  one.
- **mean difference <= 4 grey levels** over all verification frames: the product's accuracy
  target for int8 (issue 15), about 1.25x the 3.2 levels of the healthy random checkpoint.
- **keypoints within 0.01** (coordinates in [-1, 1]; 1.3 px at 256 px): the keypoint detector
  stays float in every int8 scope, so anything above float noise (1e-5) is a broken graph.

The verdict is cached with the quantized model (:mod:`engines.int8`), so it is measured once per
checkpoint, device kind and calibration; ``--recalibrate-int8`` redoes both.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.iospec import DRIVING_KP, PREDICTION, ModelIO
from export.threads import inference_threads

from .calibration import CalibrationFrames
from .errors import EngineError

#: Bounds of the check (see the module doc for the measurements behind them).
MIN_PSNR_DB = 30.0
MAX_MEAN_GREY = 4.0
MAX_KEYPOINT_ERROR = 0.01
#: Driving frames kept out of calibration for the check: this share of them, at least one.
VERIFY_SHARE = 1 / 3
#: Most (avatar x driving frame) pairs checked; each costs one fp32 and one int8 frame.
MAX_VERIFY_SAMPLES = 12
#: PSNR reported for identical frames (the formula gives infinity).
PSNR_CAP_DB = 99.0
VERDICT = "verification.json"


class Int8Rejected(EngineError):
    """int8 failed its check on this checkpoint and face (``verdict`` has the figures)."""

    def __init__(self, verdict: Verdict):
        super().__init__(f"int8 failed its check: {verdict.line()}")
        self.verdict = verdict


@dataclass(frozen=True)
class Verdict:
    """int8 against fp32 on frames calibration did not see."""

    frames: int  # (avatar x driving frame) pairs compared
    mean_psnr_db: float  # PSNR of int8 vs fp32, mean over frames
    worst_psnr_db: float  # the lowest per-frame PSNR
    mean_grey: float  # mean absolute difference, grey levels (0-255)
    keypoint_error: float  # largest driving-keypoint difference (coordinates in [-1, 1])
    passed: bool  # every figure inside its bound
    failures: tuple[str, ...] = ()  # which bounds failed, with the figures

    def line(self) -> str:
        """The figures, for the start-up line."""
        text = (
            f"PSNR {self.mean_psnr_db:.1f} dB mean, {self.worst_psnr_db:.1f} dB worst "
            f"(bound >= {MIN_PSNR_DB:g}), mean difference {self.mean_grey:.2f} grey levels "
            f"(bound {MAX_MEAN_GREY:g}), keypoints {self.keypoint_error:.1e} "
            f"(bound {MAX_KEYPOINT_ERROR:g}) on {self.frames} frame(s) not used for calibration"
        )
        if self.failures:
            text += "; failed: " + "; ".join(self.failures)
        return text

    def save(self, folder: Path) -> None:
        (folder / VERDICT).write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Verdict:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["failures"] = tuple(data.get("failures", ()))
        return cls(**data)


def judge(psnr_db: list[float], mean_grey: float, keypoint_error: float, frames: int) -> Verdict:
    """The verdict on these figures (per-frame PSNRs, overall mean difference, keypoints)."""
    worst = min(psnr_db)
    failures = []
    if worst < MIN_PSNR_DB:
        failures.append(f"worst-frame PSNR {worst:.1f} dB < {MIN_PSNR_DB:g} dB")
    if mean_grey > MAX_MEAN_GREY:
        failures.append(f"mean difference {mean_grey:.2f} > {MAX_MEAN_GREY:g} grey levels")
    if keypoint_error > MAX_KEYPOINT_ERROR:
        failures.append(f"keypoint error {keypoint_error:.3g} > {MAX_KEYPOINT_ERROR:g}")
    return Verdict(
        frames=frames,
        mean_psnr_db=round(float(np.mean(psnr_db)), 2),
        worst_psnr_db=round(worst, 2),
        mean_grey=round(mean_grey, 3),
        keypoint_error=float(f"{keypoint_error:.3g}"),
        passed=not failures,
        failures=tuple(failures),
    )


def split_frames(frames: CalibrationFrames) -> tuple[CalibrationFrames, CalibrationFrames]:
    """(calibration, verification): the last third of the driving frames (at least one) are
    kept for the check. One driving frame cannot be split: EngineError."""
    driving = frames.driving
    if len(driving) < 2:
        raise EngineError(
            f"int8 needs at least 2 driving frames with a face (one to calibrate on, one to "
            f"check on); got {len(driving)}. Use an input in which a face is visible for longer."
        )
    held = max(1, round(len(driving) * VERIFY_SHARE))
    where = f" of {frames.description}" if frames.description else ""
    calibrate = CalibrationFrames(
        frames.avatars, driving[:-held], f"{frames.description}; calibration part"
    )
    check = CalibrationFrames(frames.avatars, driving[-held:], f"last {held} frames{where}")
    return calibrate, check


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images in [0, 1] (capped at :data:`PSNR_CAP_DB` for identical ones)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 10 * math.log10(1 / mse))


def verify(
    ov: Any,
    onnx_paths: Any,
    io: ModelIO,
    quantized: Any,
    ov_device: str,
    frames: CalibrationFrames,
) -> Verdict:
    """Run the fp32 and the int8 frame graph on ``frames`` (the held-out part) and judge."""
    from .int8 import calibration_samples

    samples = calibration_samples(ov, onnx_paths[io.avatar.name], io, frames)
    step = max(1, math.ceil(len(samples) / MAX_VERIFY_SAMPLES))
    samples = samples[::step]
    core = ov.Core()
    properties = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": inference_threads()}
    float_graph = core.compile_model(str(onnx_paths[io.frame.name]), "CPU", properties)
    int8_graph = core.compile_model(quantized, ov_device, properties)
    requests = [float_graph.create_infer_request(), int8_graph.create_infer_request()]
    psnrs, grey, keypoint_error = [], [], 0.0
    for feeds in samples:
        outputs = []
        for request in requests:
            request.infer(feeds)
            outputs.append({n: request.get_tensor(n).data.copy() for n in (PREDICTION, DRIVING_KP)})
        reference, quantized_out = outputs
        for b in range(io.batch):
            psnrs.append(psnr_db(quantized_out[PREDICTION][b], reference[PREDICTION][b]))
        diff = np.abs(quantized_out[PREDICTION] - reference[PREDICTION]) * 255
        grey.append(float(diff.mean()))
        keypoint_error = max(
            keypoint_error,
            float(np.abs(quantized_out[DRIVING_KP] - reference[DRIVING_KP]).max()),
        )
    return judge(psnrs, float(np.mean(grey)), keypoint_error, len(psnrs))
