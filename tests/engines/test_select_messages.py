"""What engine selection says when something fails: once, and the fix that applies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engines import EngineOptions, create_engine, race, select
from engines.errors import EngineError
from export.config import load_config
from tests.conftest import Golden


def test_openvino_gpu_without_an_intel_gpu_suggests_its_driver(
    tiny_golden: Golden, tmp_path: Path
) -> None:
    ov = pytest.importorskip("openvino")
    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an Intel GPU that OpenVINO can use")
    options = EngineOptions(backend="openvino", device="gpu", cache_dir=tmp_path)
    config = load_config(tiny_golden.config, resolution=64)
    with pytest.raises(EngineError) as info:
        create_engine(tiny_golden.checkpoint, config, options)
    message = str(info.value)
    assert "Intel's GPU driver" in message and "intel-opencl-icd" in message
    assert "avatarcam[cpu]" not in message  # openvino is installed: pip would change nothing


def test_missing_openvino_still_names_the_extra() -> None:
    from export.errors import missing_dependency

    exc = missing_dependency("openvino", "cpu", "the openvino backend")
    assert "avatarcam[cpu]" in select._fix_for("openvino", "gpu", exc)


def test_a_failed_measurement_is_not_said_twice(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")

    def fail(*args, **kwargs):
        raise RuntimeError("the same failure the selection reports for each backend")

    monkeypatch.setattr(race, "cpu_ranking", fail)
    config = load_config(tiny_golden.config, resolution=64)
    pairs = [("openvino", "cpu"), ("onnxruntime", "cpu"), ("torch", "cpu")]
    options = EngineOptions(cache_dir=tmp_path)
    with caplog.at_level(logging.DEBUG):
        assert select._measured_cpu_order(pairs, tiny_golden.checkpoint, config, options) is None
    said = [r for r in caplog.records if "could not measure" in r.getMessage()]
    assert said and all(r.levelno < logging.INFO for r in said)  # only with -v
