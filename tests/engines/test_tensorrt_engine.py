"""The tensorrt backend and engine building.

A real TensorRT build needs an NVIDIA GPU and the tensorrt package (the ``tensorrt``-marked
contract cases run it). Here the build recipe is checked against a stand-in module that
records the TensorRT API calls, and the import and device errors are checked for real.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from engines.errors import EngineError
from engines.tensorrt_engine import require_cuda
from export import tensorrt_build
from export.errors import MissingDependencyError
from export.tensorrt_build import BuildSettings, TensorRTBuildError, build_engine


def test_missing_tensorrt_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError) as info:
        tensorrt_build.import_tensorrt()
    message = str(info.value)
    assert "pip install 'avatarcam[gpu]'" in message and "NVIDIA" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_no_gpu_is_reported() -> None:
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        require_cuda("cuda")


class FakeTensorRT:
    """Records what build_engine asks of TensorRT; ``phases`` are replayed on the monitor."""

    __version__ = "10.99"

    def __init__(self, parse_ok: bool = True, build_ok: bool = True):
        self.calls: list[tuple] = []
        self.parse_ok = parse_ok
        self.build_ok = build_ok
        fake = self

        class Logger:
            WARNING = "warning"

            def __init__(self, level):
                fake.calls.append(("logger", level))

        class IProgressMonitor:
            def __init__(self):
                fake.calls.append(("monitor-init",))

        class Cache:
            def __init__(self, data: bytes):
                self.data = data

            def serialize(self):
                return memoryview(self.data + b"+new")

        class Config:
            def __init__(self):
                self.builder_optimization_level = None
                self.progress_monitor = None
                self.cache = None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def clear_flag(self, flag):
                fake.calls.append(("clear", flag))

            def set_flag(self, flag):
                fake.calls.append(("set", flag))

            def create_timing_cache(self, data):
                fake.calls.append(("timing-in", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return object()

            def create_builder_config(self):
                fake.config = Config()
                return fake.config

            def build_serialized_network(self, network, config):
                monitor = config.progress_monitor
                monitor.phase_start("Building engine", None, 20)
                monitor.phase_start("Tactic timing", "Building engine", 3)
                monitor.phase_start("Deep phase", "Tactic timing", 2)
                for step in range(20):
                    if not monitor.step_complete("Building engine", step):
                        return None  # as TensorRT: a monitor returning False cancels
                monitor.phase_finish("Building engine")
                return memoryview(b"ENGINE") if fake.build_ok else None

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0 if fake.parse_ok else 1

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return fake.parse_ok

            def get_error(self, index):
                return "Unsupported operator: Frobnicate"

        self.Logger = Logger
        self.IProgressMonitor = IProgressMonitor
        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(TF32="tf32", FP16="fp16")


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "frame.onnx"
    path.write_bytes(b"onnx")
    return path


def _install(monkeypatch: pytest.MonkeyPatch, fake: FakeTensorRT) -> None:
    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: fake)


@pytest.mark.parametrize(("precision", "flags"), [("fp32", 0), ("fp16", 1 << 1)])
def test_build_recipe(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, tmp_path: Path, precision: str, flags: int
) -> None:
    fake = FakeTensorRT()
    _install(monkeypatch, fake)
    lines: list[str] = []
    engine = tmp_path / "out" / "frame.engine"
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old")
    build_engine(onnx_file, engine, BuildSettings(precision=precision), timing, lines.append)
    assert engine.read_bytes() == b"ENGINE"
    assert ("network", flags) in fake.calls  # fp16: strongly typed network
    assert ("clear", "tf32") in fake.calls
    assert not any(call[0] == "set" for call in fake.calls)  # never BuilderFlag.FP16
    assert ("pool", "workspace", BuildSettings().workspace) in fake.calls
    assert fake.config.builder_optimization_level == 3
    assert ("timing-in", b"old") in fake.calls
    assert timing.read_bytes() == b"old+new"  # saved after the build
    assert "tensorrt: Building engine (20 steps)" in lines
    assert "tensorrt:   Tactic timing (3 steps)" in lines
    assert not any("Deep phase" in line for line in lines)
    assert "tensorrt: Building engine: 100%" in lines
    assert not list(engine.parent.glob("*.tmp"))


def test_parse_failure_is_reported(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    _install(monkeypatch, FakeTensorRT(parse_ok=False))
    with pytest.raises(TensorRTBuildError, match="Unsupported operator: Frobnicate"):
        build_engine(onnx_file, onnx_file.with_suffix(".engine"), BuildSettings(), None, print)
    assert not onnx_file.with_suffix(".engine").exists()


def test_build_failure_leaves_no_engine(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, tmp_path: Path
) -> None:
    _install(monkeypatch, FakeTensorRT(build_ok=False))
    engine = tmp_path / "frame.engine"
    with pytest.raises(TensorRTBuildError, match="failed to build"):
        build_engine(onnx_file, engine, BuildSettings(), tmp_path / "t.cache", lambda s: None)
    assert not engine.exists() and not (tmp_path / "t.cache").exists()


def test_no_progress_monitor_before_tensorrt_10() -> None:
    assert tensorrt_build.make_progress_monitor(types.SimpleNamespace(), print) is None


def test_a_build_still_running_at_the_deadline_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, tmp_path: Path
) -> None:
    import time

    from export.tensorrt_build import BuildCancelled, set_build_deadline

    _install(monkeypatch, FakeTensorRT())
    engine = tmp_path / "frame.engine"
    set_build_deadline(time.monotonic() - 1)
    try:
        with pytest.raises(BuildCancelled, match="cancelled at the time limit"):
            build_engine(onnx_file, engine, BuildSettings(), None, lambda s: None)
    finally:
        set_build_deadline(None)
    assert not engine.exists()
    build_engine(onnx_file, engine, BuildSettings(), None, lambda s: None)
    assert engine.read_bytes() == b"ENGINE"
