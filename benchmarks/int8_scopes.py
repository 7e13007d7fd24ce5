"""int8 scopes and weights, measured in one interleaved run: ``python -m benchmarks.int8_scopes``.

Each variant is a (weights, scope) pair: the frame graph quantized by :mod:`engines.int8` with
that scope (:data:`engines.int8.SCOPES`), calibrated on faces and checked against fp32 on held
out frames (:mod:`engines.int8_verify`), then timed with OpenVINO's denormal handling off and on
(``CPU_DENORMALS_OPTIMIZATION``). Calls rotate through the variants ``--rounds`` times, so a
slow spell on a shared machine hits all alike; each variant's CPU share is recorded
(:mod:`benchmarks.cpushare`).

Weights (``--weights``, comma-separated): ``trained-like`` (He-normal convolutions, FOMM's identity
jacobian head, batch-norm scales measured on the faces:
:func:`benchmarks.weights.trained_like_checkpoint`), ``he-normal`` (the same without the
measured scales: default batch-norm statistics, activations grow layer by layer), ``default``
(PyTorch's initialisation, what ``python -m benchmarks`` used before), ``stress``
(trained-like with outlier channels, :func:`benchmarks.weights.outlier_channels`), or a
checkpoint file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .inputs import SAMPLE_DRIVING, SAMPLE_SOURCE, load_driving, load_source, shared_dir
from .machine import isa_class, machine_info, vector_extensions

WEIGHTS = ("trained-like", "he-normal", "default", "stress")


def faces(resolution: int, frames: int) -> np.ndarray:
    """The sample avatar then ``frames`` frames of the sample clip: N x 3 x R x R in [0, 1]."""
    root = shared_dir()
    source = load_source(root / SAMPLE_SOURCE, resolution, 3)
    driving = load_driving(root / SAMPLE_DRIVING, resolution, 3, frames)
    return np.concatenate([source, driving]).astype(np.float32)


def write_weights(
    kind: str, config: Any, images: np.ndarray | None, folder: Path, seed: int
) -> Path:
    """A checkpoint file for ``kind`` (see the module doc) in ``folder``; ``images`` (faces,
    N x 3 x R x R) are needed by ``trained-like`` and ``stress`` only."""
    import torch

    from export.model import build_model

    from .weights import he_normal, outlier_channels, trained_like_checkpoint

    if kind not in WEIGHTS:
        return Path(kind)
    torch.manual_seed(seed)
    if kind in ("trained-like", "stress"):
        tensors = torch.from_numpy(images)  # faces: only these kinds need them
        state = trained_like_checkpoint(config, tensors[: min(len(tensors), 9)], seed)
        if kind == "stress":
            state = outlier_channels(state, k=100.0)
    else:
        model = build_model(config)
        if kind == "he-normal":
            he_normal(model, seed)
        state = {
            "generator": model.generator.state_dict(),
            "kp_detector": model.kp_detector.state_dict(),
        }
    path = folder / f"{kind}.pth.tar"
    torch.save(state, path)
    return path


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def prepare(
    kind: str, scope: str, config: Any, images: np.ndarray, folder: Path, seed: int
) -> dict[str, Any]:
    """Quantize and check one variant; returns its OpenVINO model, verdict and feeds."""
    import openvino as ov

    from engines.cache import ArtifactCache, onnx_artifacts
    from engines.calibration import CalibrationFrames
    from engines.int8 import calibration_samples, quantize_frame_graph
    from engines.int8_verify import Verdict
    from export.iospec import model_io

    checkpoint = write_weights(kind, config, images, folder, seed)
    io = model_io(config, config.resolution, 1)
    cache = ArtifactCache(folder / "cache")
    onnx_paths, _ = onnx_artifacts(cache, checkpoint, config, io.resolution, 1, "fp32")
    frames = CalibrationFrames(
        (_uint8(images[0]),), tuple(_uint8(f) for f in images[1:]), "sample avatar and clip"
    )
    out = folder / f"{Path(kind).stem}-{scope}"
    out.mkdir()
    report = quantize_frame_graph(onnx_paths, io, "CPU", frames, out, scope)
    feeds = calibration_samples(ov, onnx_paths[io.avatar.name], io, frames)[-1]
    return {
        "weights": kind,
        "scope": scope,
        "model": out / "frame.int8.xml",
        "float_model": onnx_paths[io.frame.name],
        "verdict": Verdict.load(out / "verification.json"),
        "quantizers": report["quantized_ops"],
        "feeds": feeds,
    }


def compile_variant(variant: dict[str, Any], denormals: bool, float_graph: bool = False) -> Any:
    import openvino as ov

    from export.threads import inference_threads

    properties = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": inference_threads(),
        "CPU_DENORMALS_OPTIMIZATION": denormals,
    }
    model = variant["float_model"] if float_graph else variant["model"]
    compiled = ov.Core().compile_model(str(model), "CPU", properties)
    request = compiled.create_infer_request()
    for name, value in variant["feeds"].items():
        request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value)))
    return request


def measure(
    rows: list[dict[str, Any]], rounds: int, calls: int, warmup: int = 2
) -> list[dict[str, Any]]:
    """Interleaved timing of every row's request: ``rounds`` x (``calls`` per row)."""
    from .cpushare import between, snapshot

    for row in rows:
        for _ in range(warmup):
            row["request"].infer()
        row["ms"], row["cpu"] = [], []
    for _ in range(rounds):
        for row in rows:
            start = snapshot()
            for _ in range(calls):
                t0 = time.perf_counter()
                row["request"].infer()
                row["ms"].append((time.perf_counter() - t0) * 1000)
            row["cpu"].append(between(start, snapshot()))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    conv = {
        (r["weights"], r["denormals"]): r["p50"]
        for r in rows
        if r["scope"] == "conv" and not r["float"]
    }
    nncf = {(r["weights"], r["denormals"]): r["p50"] for r in rows if r["scope"] == "nncf"}
    lines = [
        "| weights | graph | denormals opt. | quantizers | ms p50 | vs conv | vs nncf | "
        "PSNR worst | mean diff (grey) | check | own cores |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        key = (r["weights"], r["denormals"])
        verdict = r["verdict"]
        vs_conv = f"{conv[key] / r['p50']:.2f}x" if key in conv else ""
        vs_nncf = f"{r['p50'] / nncf[key]:.2f}x" if key in nncf else ""
        check = "" if r["float"] else ("pass" if verdict.passed else "FAIL")
        lines.append(
            f"| {Path(r['weights']).stem} | {'fp32' if r['float'] else 'int8 ' + r['scope']} | "
            f"{'on' if r['denormals'] else 'off'} | {'' if r['float'] else r['quantizers']} | "
            f"{r['p50']:.1f} | {vs_conv} | {vs_nncf} | "
            f"{'' if r['float'] else f'{verdict.worst_psnr_db:.1f}'} | "
            f"{'' if r['float'] else f'{verdict.mean_grey:.2f}'} | {check} | {r['own_cores']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from export.config import load_config
    from export.threads import passive_openmp

    passive_openmp()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_scopes", description=__doc__)
    parser.add_argument("--config", default="vox-256", help="preset or FOMM YAML")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--weights", default="trained-like", help=f"{', '.join(WEIGHTS)} or file")
    parser.add_argument("--scopes", default="conv,middle,nncf")
    parser.add_argument("--denormals", default="off", help="off, on or both")
    parser.add_argument("--fp32", action="store_true", help="also time the fp32 frame graph")
    parser.add_argument("--frames", type=int, default=12, help="clip frames (2/3 calibrate)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write JSON + Markdown here")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.resolution)
    denormals = {"off": [False], "on": [True], "both": [False, True]}[args.denormals]
    images = faces(config.resolution, args.frames)
    with tempfile.TemporaryDirectory(prefix="avatarcam-scopes-") as tmp:
        rows = []
        for kind in args.weights.split(","):
            for scope in args.scopes.split(","):
                print(f"preparing {kind} / {scope} ...", file=sys.stderr, flush=True)
                variant = prepare(kind, scope, config, images, Path(tmp), args.seed)
                for flag in denormals:
                    rows.append({**variant, "denormals": flag, "float": False})
                    rows[-1]["request"] = compile_variant(variant, flag)
            if args.fp32:
                rows.append({**variant, "denormals": False, "float": True, "scope": "fp32"})
                rows[-1]["request"] = compile_variant(variant, False, float_graph=True)
        measure(rows, args.rounds, args.calls)
        for r in rows:
            r["p50"] = statistics.median(r["ms"])
            own = [c["own_cores"] for c in r["cpu"] if c["own_cores"] is not None]
            r["own_cores"] = round(statistics.median(own), 2) if own else None
        extensions = vector_extensions()
        header = (
            f"{machine_info()['cpu']} ({isa_class(extensions)}: {', '.join(extensions)}); "
            f"{config.name} at {config.resolution} px; frame graph only, batch 1; "
            f"{args.rounds} rounds x {args.calls} calls, interleaved"
        )
        text = f"{header}\n\n{table(rows)}\n"
        print(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".md").write_text(text, encoding="utf-8")
            keep = ("weights", "scope", "denormals", "float", "quantizers", "p50", "ms", "cpu")
            data = {
                "command": " ".join(["python -m benchmarks.int8_scopes", *(argv or sys.argv[1:])]),
                "machine": machine_info(),
                "rows": [
                    {**{k: r[k] for k in keep}, "verdict": r["verdict"].__dict__} for r in rows
                ],
            }
            args.out.with_suffix(".json").write_text(
                json.dumps(data, indent=1, default=str), encoding="utf-8"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
