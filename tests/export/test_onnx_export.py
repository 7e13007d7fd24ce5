"""ONNX export: interface, checker, parity with PyTorch, fp16 design, failure cleanup, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import onnx_export
from export.checkpoint import load_model
from export.config import load_config
from export.iospec import model_io
from export.model import FOMM
from export.onnx_export import (
    FP32_TOLERANCE,
    OPSET,
    ExportError,
    ExportResult,
    export_onnx,
    graph_module,
    mixed_precision_model,
    sample_inputs,
)
from tests.conftest import ROOT, Golden, load_golden

ort = pytest.importorskip("onnxruntime")


def _tiny_model() -> FOMM:
    golden = load_golden("tiny64")
    config = load_config(golden.config, resolution=golden.resolution)
    return load_model(golden.checkpoint, config)


@pytest.fixture(scope="module")
def tiny_model() -> FOMM:
    return _tiny_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model: FOMM) -> dict[str, ExportResult]:
    """tiny64 exported once per precision for the whole module."""
    out = tmp_path_factory.mktemp("onnx")
    return {p: export_onnx(tiny_model, out, precision=p) for p in ("fp32", "fp16")}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_files_follow_the_io_spec(exported: dict[str, ExportResult], precision: str) -> None:
    result = exported[precision]
    io = result.io
    for name, spec in (("avatar", io.avatar), ("frame", io.frame)):
        path = result.paths[name]
        assert path.name == f"fomm-tiny64-64px-b1-{precision}.{name}.onnx"
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"]
        assert opset >= OPSET >= 17
        assert [i.name for i in model.graph.input] == spec.input_names
        assert [o.name for o in model.graph.output] == spec.output_names
        for value, tensor in zip(
            [*model.graph.input, *model.graph.output], [*spec.inputs, *spec.outputs], strict=True
        ):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            assert tuple(dims) == tensor.shape  # static: every dim has a value
        ops = {node.op_type for node in model.graph.node}
        if name == "frame":
            assert "GridSample" in ops
        # Self-contained: no external data.
        assert not any(
            init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
        )
        assert not list(path.parent.glob("*.partial"))


def test_fp32_parity_with_pytorch(exported: dict[str, ExportResult]) -> None:
    for report in exported["fp32"].graphs.values():
        assert report.parity_checked
        assert set(report.max_abs_error) == set(report.tolerance)
        for name, error in report.max_abs_error.items():
            assert error <= report.tolerance[name]
        # The keypoints never need the float64 fallback.
        for name in ("avatar_kp", "driving_kp"):
            if name in report.max_abs_error:
                assert report.tolerance[name] == FP32_TOLERANCE


def test_fp32_graph_runs_like_pytorch(exported: dict[str, ExportResult], tiny_model: FOMM) -> None:
    io = exported["fp32"].io
    inputs = sample_inputs(tiny_model, io, seed=3)["frame"]
    with torch.inference_mode():
        expected = graph_module(tiny_model, io, "frame")(*inputs)
    session = ort.InferenceSession(
        str(exported["fp32"].paths["frame"]), providers=["CPUExecutionProvider"]
    )
    actual = session.run(
        None, {n: t.numpy() for n, t in zip(io.frame.input_names, inputs, strict=True)}
    )
    for got, want in zip(actual, expected, strict=True):
        assert np.abs(got - want.numpy()).max() <= 1e-3


def test_fp16_keeps_float32_io_and_keypoint_math(exported: dict[str, ExportResult]) -> None:
    result = exported["fp16"]
    model = onnx.load(str(result.paths["frame"]))
    ops = [node.op_type for node in model.graph.node]
    assert "Cast" in ops
    half = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    full = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert half and full  # convolution stacks in fp16, keypoint detector in fp32
    for report in result.graphs.values():
        assert report.parity_checked
        for name, error in report.max_abs_error.items():
            assert error <= report.tolerance[name]
        # Keypoints are computed in float32 even in fp16 graphs.
        for name in ("avatar_kp", "avatar_jacobian", "driving_kp", "driving_jacobian"):
            if name in report.max_abs_error:
                assert report.max_abs_error[name] <= 1e-4


def test_mixed_precision_model_leaves_the_original_alone(tiny_model: FOMM) -> None:
    mixed = mixed_precision_model(tiny_model)
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert mixed.kp_detector.kp.weight.dtype == torch.float32
    assert mixed.generator.bottleneck.module[0].conv1.weight.dtype == torch.float16
    assert not any(m.training for m in mixed.modules())


def test_failed_parity_raises_and_leaves_no_file(
    tmp_path: Path, tiny_model: FOMM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", 0.0)
    monkeypatch.setattr(onnx_export, "FP32_NOISE_FACTOR", 0.0)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_onnx(tiny_model, tmp_path, graphs=["frame"])
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_and_graph(tmp_path: Path, tiny_model: FOMM) -> None:
    with pytest.raises(ExportError, match="precision"):
        export_onnx(tiny_model, tmp_path, precision="int8")
    with pytest.raises(ExportError, match="graph"):
        export_onnx(tiny_model, tmp_path, graphs=["decoder"])


def test_sample_inputs_are_golden_like(tiny_model: FOMM) -> None:
    io = model_io(tiny_model.config)
    inputs = sample_inputs(tiny_model, io)
    avatar = inputs["avatar"][0]
    assert avatar.shape == io.avatar.inputs[0].shape
    assert float(avatar.min()) >= 0 and float(avatar.max()) <= 1
    frame = inputs["frame"]
    assert [tuple(t.shape) for t in frame] == [t.shape for t in io.frame.inputs]


def test_cli_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "export", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "--precision" in done.stdout and "--tensorrt" in done.stdout


def test_cli_exports_one_graph(tmp_path: Path, tiny_golden: Golden) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "--checkpoint",
            str(tiny_golden.checkpoint),
            "--config",
            str(tiny_golden.config),
            "--resolution",
            "64",
            "--graph",
            "avatar",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fomm-tiny64-64px-b1-fp32.avatar.onnx").is_file()
    assert "parity vs PyTorch" in done.stdout


def test_cli_reports_user_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "export", "--checkpoint", str(tmp_path / "missing.pth.tar")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
