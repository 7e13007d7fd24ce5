"""What the export's parity check tells a user: what was compared, and whether it matters."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from export import onnx_export
from export.checkpoint import load_model
from export.config import load_config
from export.onnx_export import ExportError, export_onnx
from tests.conftest import load_golden

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_model():
    golden = load_golden("tiny64")
    return load_model(golden.checkpoint, load_config(golden.config, resolution=64))


def test_float64_check_that_passes_is_explained_not_a_warning(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", 1e-12)  # every output takes the fallback
    monkeypatch.setattr(onnx_export, "FP32_NOISE_FACTOR", 1e9)
    with caplog.at_level(logging.INFO, logger="export"):
        export_onnx(tiny_model, tmp_path, graphs=["frame"])
    said = [r for r in caplog.records if "ONNX export check" in r.getMessage()]
    assert said and all(r.levelno == logging.INFO for r in said)
    text = said[0].getMessage()
    assert "frame graph" in text and "both in float32" in text and "float64" in text
    assert "nothing is wrong" in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_float64_check_that_fails_warns_and_deletes(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", 0.0)
    monkeypatch.setattr(onnx_export, "FP32_NOISE_FACTOR", 0.0)
    with caplog.at_level(logging.INFO, logger="export"), pytest.raises(ExportError) as info:
        export_onnx(tiny_model, tmp_path, graphs=["frame"])
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "computes something else" in warned[0].getMessage()
    message = str(info.value)
    assert "--backend torch" in message and "checkpoint of your own" in message
    assert list(tmp_path.iterdir()) == []
