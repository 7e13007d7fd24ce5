"""Backend selection: auto order, reasons, the combined error, and imports without extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engines import EngineOptions, create_engine, race, select
from engines.errors import EngineError
from engines.select import Attempt, candidates, precheck
from export.config import load_config
from export.errors import CheckpointError
from tests.conftest import ROOT, Golden


@pytest.fixture
def tiny_config(tiny_golden: Golden):
    return load_config(tiny_golden.config, resolution=64)


def test_auto_order_on_a_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: True)
    assert candidates(EngineOptions()) == [
        ("tensorrt", "cuda"),
        ("onnxruntime", "cuda"),
        ("torch", "cuda"),
        ("openvino", "cpu"),
        ("onnxruntime", "cpu"),
        ("torch", "cpu"),
    ]
    assert candidates(EngineOptions(backend="onnxruntime")) == [
        ("onnxruntime", "cuda"),
        ("onnxruntime", "cpu"),
    ]
    assert candidates(EngineOptions(device="cuda:1")) == [
        ("tensorrt", "cuda:1"),
        ("onnxruntime", "cuda:1"),
        ("torch", "cuda:1"),
    ]


def test_auto_order_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    assert candidates(EngineOptions()) == [
        ("openvino", "cpu"),
        ("onnxruntime", "cpu"),
        ("torch", "cpu"),
    ]
    assert candidates(EngineOptions(backend="tensorrt")) == [("tensorrt", "cpu")]


def test_openvino_devices_run_only_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    assert candidates(EngineOptions(device="GPU")) == [("openvino", "gpu")]
    assert candidates(EngineOptions(device="gpu.1")) == [("openvino", "gpu.1")]
    assert candidates(EngineOptions(device="npu", backend="openvino")) == [("openvino", "npu")]
    # An explicit non-OpenVINO backend on an Intel device is tried and refused with the reason.
    assert candidates(EngineOptions(device="npu", backend="torch")) == [("torch", "npu")]
    with pytest.raises(EngineError, match="gpu and npu are Intel devices"):
        candidates(EngineOptions(device="tpu"))


def test_int8_is_openvinos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_installed", lambda module: True)
    for backend in ("onnxruntime", "torch", "tensorrt"):
        attempt = precheck(backend, "cpu", "int8")
        assert attempt is not None and "openvino" in attempt.reason
        assert "--backend openvino" in attempt.fix
    assert precheck("openvino", "cpu", "int8") is None
    assert "NVIDIA" in precheck("openvino", "cuda", "fp32").reason


def test_prechecks_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_installed", lambda module: False)
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    trt = precheck("tensorrt", "cuda", "fp32")
    assert trt is not None and "avatarcam[gpu]" in trt.fix
    assert "NVIDIA" in precheck("tensorrt", "cpu", "fp32").reason
    ort_cpu = precheck("onnxruntime", "cpu", "fp32")
    assert ort_cpu is not None and ort_cpu.fix == "pip install 'avatarcam[cpu]'"
    assert "avatarcam[gpu]" in precheck("onnxruntime", "cuda", "fp32").fix
    assert "CUDA" in precheck("torch", "cuda", "fp32").reason
    assert "fp16" in precheck("torch", "cpu", "fp16").reason
    assert precheck("torch", "cpu", "fp32") is None
    ov_cpu = precheck("openvino", "cpu", "fp32")
    assert ov_cpu is not None and ov_cpu.fix == "pip install 'avatarcam[cpu]'"


def test_auto_measures_the_cpu_backends_once(
    tiny_golden: Golden, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    measured = []
    real_measure = race.measure

    def measure(backends, start, io):
        ms, failed = real_measure(backends, start, io)
        measured.append(ms)
        return ms, failed

    monkeypatch.setattr(race, "measure", measure)
    options = EngineOptions(cache_dir=tmp_path)
    with create_engine(tiny_golden.checkpoint, tiny_config, options) as engine:
        first = (engine.backend, engine.selection_reason)
    assert len(measured) == 1 and set(measured[0]) == {"openvino", "onnxruntime"}
    fastest = min(measured[0], key=measured[0].__getitem__)
    assert first[0] == fastest
    reason = first[1]
    assert f"{fastest} on cpu" in reason and "--backend auto" in reason
    assert "measured on this CPU" in reason and "measured now" in reason
    for backend, ms in measured[0].items():
        assert f"{backend} {ms:.0f} ms" in reason
    # The second start reads the cached measurement instead of measuring again.
    with create_engine(tiny_golden.checkpoint, tiny_config, options) as engine:
        assert engine.backend == fastest
        assert "cached measurement" in engine.selection_reason
    assert len(measured) == 1


def test_auto_follows_the_measurement(
    tiny_golden: Golden, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever backend measures faster is started first (here: a stubbed measurement)."""
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    monkeypatch.setattr(select, "_installed", lambda module: True)
    started = []

    def start(backend, device, *args):
        started.append(backend)
        raise RuntimeError(f"{backend} stub")

    monkeypatch.setattr(select, "_start", start)
    monkeypatch.setattr(
        race, "measure", lambda backends, s, io: ({"onnxruntime": 10.0, "openvino": 30.0}, {})
    )
    with pytest.raises(EngineError):
        create_engine(tiny_golden.checkpoint, tiny_config, EngineOptions(cache_dir=tmp_path))
    assert started == ["onnxruntime", "openvino", "torch"]


def test_auto_int8_picks_openvino_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    monkeypatch.setattr(select, "_installed", lambda module: True)
    options = EngineOptions(precision="int8")
    runnable = [p for p in candidates(options) if precheck(*p, "int8") is None]
    assert runnable == [("openvino", "cpu")]
    reason = select._reason(options, "openvino", "cpu", [precheck("onnxruntime", "cpu", "int8")])
    assert "int8 is the openvino backend's" in reason
    assert "int8 runs in the openvino backend only" in reason


def test_auto_falls_back_to_torch_and_says_why(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    monkeypatch.setattr(
        select, "_installed", lambda module: module not in ("onnxruntime", "openvino")
    )
    with create_engine(tiny_golden.checkpoint, tiny_config) as engine:
        assert engine.backend == "torch"
        assert "onnxruntime on cpu (onnxruntime is not installed)" in engine.selection_reason
        assert "openvino on cpu (openvino is not installed)" in engine.selection_reason


def test_a_failing_backend_is_recorded_and_the_next_one_tried(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    real_start = select._start

    def start(backend, device, *args):
        if backend in ("onnxruntime", "openvino"):
            raise RuntimeError("session creation failed")
        return real_start(backend, device, *args)

    monkeypatch.setattr(select, "_start", start)
    with create_engine(tiny_golden.checkpoint, tiny_config) as engine:
        assert engine.backend == "torch"
        assert "RuntimeError: session creation failed" in engine.selection_reason


def test_combined_error_when_nothing_starts(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: True)
    monkeypatch.setattr(select, "_installed", lambda module: False)

    def start(backend, device, *args):
        raise RuntimeError(f"{backend} exploded on {device}")

    monkeypatch.setattr(select, "_start", start)
    with pytest.raises(EngineError) as info:
        create_engine(tiny_golden.checkpoint, tiny_config)
    message = str(info.value)
    assert message.startswith("could not start any backend")
    for line in (
        "- tensorrt on cuda: the tensorrt package is not installed",
        "- onnxruntime on cuda: onnxruntime is not installed",
        "- torch on cuda: RuntimeError: torch exploded on cuda",
        "- openvino on cpu: openvino is not installed",
        "- onnxruntime on cpu: onnxruntime is not installed",
        "- torch on cpu: RuntimeError: torch exploded on cpu",
        "fix: pip install 'avatarcam[gpu]'",
        "fix: pip install 'avatarcam[cpu]'",
        "fix: install an NVIDIA GPU driver",
    ):
        assert line in message, line


def test_requested_backend_that_cannot_start(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    with pytest.raises(EngineError) as info:
        create_engine(tiny_golden.checkpoint, tiny_config, EngineOptions(backend="tensorrt"))
    message = str(info.value)
    assert "could not start the tensorrt backend" in message
    assert "avatarcam[gpu]" in message and "torch" not in message.split("\n", 1)[1]


def test_checkpoint_errors_are_not_hidden(tmp_path: Path, tiny_config) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        create_engine(tmp_path / "missing.pth.tar", tiny_config, EngineOptions(backend="torch"))


def test_bad_options(tiny_golden: Golden, tiny_config) -> None:
    for options, match in (
        (EngineOptions(backend="magic"), "unknown backend"),
        (EngineOptions(precision="int4"), "unknown precision"),
        (EngineOptions(batch=0), "batch"),
        (EngineOptions(device="tpu"), "unknown device"),
    ):
        with pytest.raises(EngineError, match=match):
            create_engine(tiny_golden.checkpoint, tiny_config, options)


def test_attempt_line() -> None:
    line = Attempt("onnxruntime", "cpu", "not installed", "pip install x").line()
    assert line == "- onnxruntime on cpu: not installed\n    fix: pip install x"


# What a machine without the optional packages looks like to Python: ``import`` raises
# ImportError and importlib.util.find_spec returns None.
BLOCKED = """
import sys

for name in ("onnxruntime", "tensorrt", "openvino", "nncf"):
    sys.modules[name] = None
"""


def test_engines_import_without_optional_packages(tiny_golden: Golden, tmp_path: Path) -> None:
    script = BLOCKED + textwrap.dedent(
        f"""
        import engines, engines.select, engines.cache, engines.torch_engine
        import engines.onnxruntime_engine, engines.tensorrt_engine, engines.openvino_engine
        import engines.int8, engines.race
        import export.onnx_export, export.tensorrt_build
        assert sys.modules["onnxruntime"] is None and sys.modules["tensorrt"] is None

        from engines import EngineError, EngineOptions, create_engine
        from export.config import load_config
        from export.errors import MissingDependencyError

        config = load_config({str(tiny_golden.config)!r}, resolution=64)
        checkpoint = {str(tiny_golden.checkpoint)!r}
        cache = {str(tmp_path)!r}
        with create_engine(checkpoint, config, EngineOptions(cache_dir=cache)) as engine:
            assert engine.backend == "torch", engine.backend
            print("REASON", engine.selection_reason)
        try:
            create_engine(checkpoint, config, EngineOptions(backend="onnxruntime", cache_dir=cache))
        except EngineError as exc:
            print("ORT", str(exc).replace(chr(10), " | "))
        try:
            engines.onnxruntime_engine.import_onnxruntime()
        except MissingDependencyError as exc:
            print("IMPORT", str(exc).replace(chr(10), " | "))
        try:
            engines.openvino_engine.import_openvino()
        except MissingDependencyError as exc:
            print("OV", str(exc).replace(chr(10), " | "))
        try:
            export.tensorrt_build.import_tensorrt()
        except MissingDependencyError as exc:
            print("TRT", str(exc).replace(chr(10), " | "))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines()}
    assert "onnxruntime is not installed" in out["REASON"]
    assert "could not start the onnxruntime backend" in out["ORT"]
    assert "pip install 'avatarcam[cpu]'" in out["ORT"]
    assert "avatarcam[cpu]" in out["IMPORT"] or "avatarcam[gpu]" in out["IMPORT"]
    assert "avatarcam[gpu]" in out["TRT"] and "NVIDIA" in out["TRT"]
    assert "avatarcam[cpu]" in out["OV"] and "openvino" in out["OV"]
