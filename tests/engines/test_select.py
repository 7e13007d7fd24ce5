"""Backend selection: auto order, reasons, the combined error, and imports without extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engines import EngineOptions, create_engine, select
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
    assert candidates(EngineOptions()) == [("onnxruntime", "cpu"), ("torch", "cpu")]
    assert candidates(EngineOptions(backend="tensorrt")) == [("tensorrt", "cpu")]


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


def test_auto_picks_onnxruntime_on_this_cpu(
    tiny_golden: Golden, tiny_config, shared_engine_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    options = EngineOptions(cache_dir=shared_engine_cache)
    with create_engine(tiny_golden.checkpoint, tiny_config, options) as engine:
        assert engine.backend == "onnxruntime" and engine.device == "cpu"
        reason = engine.selection_reason
    assert "onnxruntime on cpu" in reason and "--backend auto" in reason
    assert "faster than eager PyTorch" in reason


def test_auto_falls_back_to_torch_and_says_why(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    monkeypatch.setattr(select, "_installed", lambda module: module not in ("onnxruntime",))
    with create_engine(tiny_golden.checkpoint, tiny_config) as engine:
        assert engine.backend == "torch"
        assert "onnxruntime on cpu (onnxruntime is not installed)" in engine.selection_reason


def test_a_failing_backend_is_recorded_and_the_next_one_tried(
    tiny_golden: Golden, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    real_start = select._start

    def start(backend, device, *args):
        if backend == "onnxruntime":
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
        (EngineOptions(precision="int8"), "unknown precision"),
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

for name in ("onnxruntime", "tensorrt"):
    sys.modules[name] = None
"""


def test_engines_import_without_optional_packages(tiny_golden: Golden, tmp_path: Path) -> None:
    script = BLOCKED + textwrap.dedent(
        f"""
        import engines, engines.select, engines.cache, engines.torch_engine
        import engines.onnxruntime_engine, engines.tensorrt_engine
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
