"""``--precision int8``: the frame graph quantized by NNCF, calibrated on the user's own frames.

Scheme (NNCF post-training quantization of the OpenVINO model, performance preset): static
int8, symmetric per-channel weights and per-tensor activations, with fast bias correction. The
keypoint detector and the motion math stay in float32: keypoints feed every later stage, and
quantizing the detector doubles the worst-case pixel error for a few percent of speed (issue 8's
measurement: 101 vs 92 ms per frame, max error halved). Everything the generator does, 90% of
the arithmetic, runs in int8 on VNNI. The avatar graph runs once per avatar and stays float.

Calibration samples are built from :class:`~engines.calibration.CalibrationFrames`: each
avatar's state (the float avatar graph) with each driving frame, under the relative motion the
live loop would use (reference = the first driving frame, adapted scale). The quantized model
is cached per checkpoint, resolution, batch and device kind like every other artifact
(:mod:`engines.cache`); calibration runs once, on the first start that needs it, and
``recalibrate=True`` (``--recalibrate-int8``) redoes it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import missing_dependency
from export.iospec import (
    AVATAR,
    AVATAR_FEATURES,
    AVATAR_JACOBIAN,
    AVATAR_KP,
    AVATAR_SMALL,
    DRIVING,
    MOTION_JACOBIAN,
    MOTION_JACOBIAN_OFFSET,
    MOTION_OFFSET,
    MOTION_SCALE,
    ModelIO,
)
from export.motion import relative_motion

from .calibration import CalibrationFrames, CalibrationSource, resolve, to_nchw
from .errors import EngineError
from .int8_verify import VERDICT, Verdict, split_frames, verify

log = logging.getLogger(__name__)

#: Most calibration samples (avatar x driving frame pairs) used; more adds time, not accuracy.
MAX_SAMPLES = 48
#: Modules whose operations stay float32 (ONNX node namespaces hold the module path).
FLOAT_MODULES = ("model.kp_detector",)
#: The only operation types quantized: convolutions, and additions (the residual blocks' skip
#: connections, so the bottleneck stays in int8 between convolutions). NNCF would otherwise
#: quantize other element-wise operations too, and in this graph those are the motion math.
INT8_TYPES = ("Convolution", "GroupConvolution", "Add")
#: Where element-wise operations are motion math (heatmaps, sparse motion): only its
#: convolutions are quantized.
MOTION_MODULES = ("dense_motion_network",)
#: Inside the motion network, the hourglass is an ordinary CNN (no motion math).
HOURGLASS = "hourglass"
#: The int8 scopes measured against each other (README, "int8 scopes"; benchmarks.int8_scopes):
#: - ``conv``: convolutions and additions in the generator and the motion network's convolutions
#:   (:data:`INT8_TYPES`); all else float.
#: - ``middle``: ``conv`` plus pooling, interpolation and concatenation in the hourglass and the
#:   up-blocks; heatmaps, sparse motion and the motion transfer stay float.
#: - ``nncf``: NNCF's default scope (every operation type it quantizes), keypoint detector float.
SCOPES = ("conv", "middle", "nncf")
MIDDLE_TYPES = (*INT8_TYPES, "AvgPool", "MaxPool", "Interpolate", "Concat")
#: The scope int8 builds use. Measured (README, "int8 scopes"): ``nncf`` moves the driving
#: keypoints (0.028 on tiny64: it quantizes the input the keypoint detector reads), ``middle``
#: passes but is not faster than ``conv`` at vox-256, and ``conv`` is within 0.88-1.11x of
#: ``nncf`` there.
SCOPE = "conv"
SCHEME = {
    "method": "nncf.quantize",
    "preset": "performance",  # symmetric int8 weights (per channel) and activations
    "fast_bias_correction": True,
    "float_modules": [*FLOAT_MODULES, "motion math outside the generator", *MOTION_MODULES],
    "int8_types": list(INT8_TYPES),
    "scope": SCOPE,
    "max_samples": MAX_SAMPLES,
    "verification": "last third of the driving frames held out (engines.int8_verify)",
    "format": 3,  # bump when anything above changes meaning
}
MODEL_XML = "frame.int8.xml"
MODEL_BIN = "frame.int8.bin"
REPORT = "calibration.json"


def import_nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise missing_dependency("nncf", "cpu", "--precision int8 (NNCF quantization)") from exc
    return nncf


def float_node_names(onnx_path: Path, scope: str = SCOPE) -> list[str]:
    """ONNX nodes of the frame graph that stay float in ``scope`` (:data:`SCOPES`): always the
    keypoint detector; for ``conv`` and ``middle`` also every operation outside the generator
    (the motion transfer applied to the keypoints) and the dense motion network's operations
    other than convolutions (Gaussian heatmaps, sparse motion; ``middle`` quantizes the
    hourglass's pooling, interpolation and concatenation)."""
    import onnx

    if scope not in SCOPES:
        raise ValueError(f"unknown int8 scope {scope!r}: expected one of {SCOPES}")
    model = onnx.load(str(onnx_path), load_external_data=False)
    names = []
    for node in model.graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        in_float_module = any(m in namespace for m in FLOAT_MODULES)
        outside_generator = "model.generator" not in namespace
        motion_math = node.op_type != "Conv" and any(m in namespace for m in MOTION_MODULES)
        if scope == "middle":
            motion_math = motion_math and HOURGLASS not in namespace
        if in_float_module or (scope != "nncf" and (outside_generator or motion_math)):
            names.append(node.name)
    return names


def ignored_scope(nncf: Any, model: Any, onnx_path: Path, scope: str = SCOPE) -> Any:
    """NNCF's ignored scope for the float parts of ``scope``: the operation types it leaves
    float, and the float modules' operations by name. OpenVINO names operations read from ONNX
    after the node (``node_Conv_3``) or a part of it (``node_Conv_3/WithoutBiases``)."""
    allowed = {"conv": INT8_TYPES, "middle": MIDDLE_TYPES}.get(scope)
    present = {op.get_type_name() for op in model.get_ordered_ops()}
    types = sorted(present - set(allowed)) if allowed is not None else []
    names = float_node_names(onnx_path, scope)
    patterns = []
    if names:
        alternatives = "|".join(re.escape(n) for n in names)
        patterns.append(f"^(?:{alternatives})(?:/.*)?$")
    return nncf.IgnoredScope(patterns=patterns, types=types, validate=False)


def _batched(array: np.ndarray, batch: int) -> np.ndarray:
    """1 x ... -> batch x ... (repeats the one sample)."""
    return np.ascontiguousarray(np.repeat(array, batch, axis=0))


def calibration_samples(
    ov: Any, avatar_onnx: Path, io: ModelIO, frames: CalibrationFrames
) -> list[dict[str, np.ndarray]]:
    """Frame-graph feeds: each avatar's state with driving frames under relative motion."""
    frames.check(io.resolution)
    core = ov.Core()
    compiled = core.compile_model(str(avatar_onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def encode(image: np.ndarray) -> dict[str, np.ndarray]:
        request.infer({AVATAR: _batched(image, io.batch)})
        return {n: request.get_tensor(n).data.copy() for n in io.avatar.output_names}

    avatars = [encode(a) for a in to_nchw(frames.avatars)]
    driving = to_nchw(frames.driving)
    driving_kp = [encode(d) for d in driving]
    reference = driving_kp[0]
    samples = []
    pairs = [(a, d) for d in range(len(driving)) for a in range(len(avatars))]
    step = max(1, len(pairs) // MAX_SAMPLES)
    for a, d in pairs[::step][:MAX_SAMPLES]:
        state = avatars[a]
        jac = io.jacobian
        motion = relative_motion(
            state[AVATAR_KP],
            state[AVATAR_JACOBIAN] if jac else None,
            reference[AVATAR_KP],
            reference[AVATAR_JACOBIAN] if jac else None,
            True,
        )
        feeds = {
            DRIVING: _batched(driving[d], io.batch),
            AVATAR_FEATURES: state[AVATAR_FEATURES],
            AVATAR_SMALL: state[AVATAR_SMALL],
            AVATAR_KP: state[AVATAR_KP],
            MOTION_SCALE: np.asarray(motion.scale, np.float32),
            MOTION_OFFSET: np.asarray(motion.offset, np.float32),
        }
        if jac:
            feeds[AVATAR_JACOBIAN] = state[AVATAR_JACOBIAN]
            feeds[MOTION_JACOBIAN] = np.asarray(motion.jacobian, np.float32)
            feeds[MOTION_JACOBIAN_OFFSET] = np.asarray(motion.jacobian_offset, np.float32)
        samples.append({n: feeds[n] for n in io.frame.input_names})
    return samples


def _say(message: str) -> None:
    print(f"avatarcam: {message}", file=sys.stderr, flush=True)


def quantize_frame_graph(
    onnx_paths: Mapping[str, Path],
    io: ModelIO,
    ov_device: str,
    frames: CalibrationFrames,
    folder: Path,
    scope: str = SCOPE,
) -> dict[str, Any]:
    """Calibrate and quantize the frame graph on the first two thirds of the driving frames,
    check it against fp32 on the rest (:mod:`engines.int8_verify`); write :data:`MODEL_XML`/
    ``BIN``, the verdict and a report into ``folder``; return the report."""
    import openvino as ov

    nncf = import_nncf()
    start = time.monotonic()
    frames, held_out = split_frames(frames)
    samples = calibration_samples(ov, onnx_paths[io.avatar.name], io, frames)
    where = f" ({frames.description})" if frames.description else ""
    _say(
        f"calibrating int8 on {len(samples)} samples: {len(frames.avatars)} avatar(s) x "
        f"{len(frames.driving)} driving frame(s){where}; once per model and device ..."
    )
    frame_onnx = onnx_paths[io.frame.name]
    model = ov.Core().read_model(str(frame_onnx))
    kind = ov_device.split(".", 1)[0]
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF's progress lines would bury ours
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=getattr(nncf.TargetDevice, kind, nncf.TargetDevice.ANY),
            subset_size=len(samples),
            fast_bias_correction=True,
            ignored_scope=ignored_scope(nncf, model, frame_onnx, scope),
        )
    finally:
        nncf_log.setLevel(level)
    ov.save_model(quantized, str(folder / MODEL_XML), compress_to_fp16=False)
    verdict = verify(ov, onnx_paths, io, quantized, ov_device, held_out)
    verdict.save(folder)
    seconds = time.monotonic() - start
    report = {
        "samples": len(samples),
        "avatars": len(frames.avatars),
        "driving_frames": len(frames.driving),
        "source": frames.description,
        "scope": scope,
        "verified_on": held_out.description,
        "seconds": round(seconds, 2),
        "quantized_ops": sum(
            1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
        ),
    }
    (folder / REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _say(
        f"int8 calibration and check done in {seconds:.1f} s ({report['quantized_ops']} "
        f"quantizers): {'passed' if verdict.passed else 'FAILED'}: {verdict.line()}"
    )
    return report


def quantized_frame_model(
    cache: Any,
    onnx_paths: Mapping[str, Path],
    onnx_entry: Any,
    config: Any,
    io: ModelIO,
    ov_device: str,
    calibration: CalibrationSource | None,
    recalibrate: bool,
) -> tuple[Path, Verdict]:
    """The cached int8 frame graph (OpenVINO IR) for this model and device kind and the verdict
    of its check, both made on ``calibration`` when missing or when ``recalibrate`` is set."""
    from export.onnx_export import model_slug

    from .cache import package_version

    kind = ov_device.split(".", 1)[0]
    key = {
        "onnx": onnx_entry.digest,  # checkpoint, config, resolution, batch, exporter
        "device": kind,
        "openvino": package_version("openvino"),
        "nncf": package_version("nncf"),
        "scheme": SCHEME,
    }
    label = f"{model_slug(config)}-{io.resolution}px-b{io.batch}-int8-{kind.lower()}"
    files = [MODEL_XML, MODEL_BIN, REPORT, VERDICT]
    what = "int8 frame graph"
    if recalibrate and cache.remove("openvino-int8", label, key, what):
        _say("--recalibrate-int8: dropped the cached int8 model; calibrating again")

    def build(folder: Path) -> None:
        frames = resolve(calibration)
        if frames is None:
            raise EngineError(
                "--precision int8 needs calibration frames the first time it runs for a model: "
                "run_live.py collects them from your avatar and input. From Python, pass "
                "calibration=CalibrationFrames(...) (or a callable returning them) to "
                "create_engine."
            )
        quantize_frame_graph(onnx_paths, io, ov_device, frames, folder)

    entry = cache.get_or_build("openvino-int8", label, key, files, build, what)
    try:
        report = json.loads(entry.file(REPORT).read_text(encoding="utf-8"))
        log.info(
            "int8 frame graph: calibrated on %s samples (%s) in %s s; cached in %s",
            report.get("samples"),
            report.get("source") or "frames given to create_engine",
            report.get("seconds"),
            entry.path,
        )
    except (OSError, ValueError):
        pass
    return entry.file(MODEL_XML), Verdict.load(entry.file(VERDICT))
