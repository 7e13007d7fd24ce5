"""--backend auto and torch.compile: measured once per model/GPU/torch, kept in the cache,
used only when faster, and the reason is always given."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import EngineOptions, compile_choice, create_engine, select
from engines.cache import ArtifactCache
from engines.device import Device
from export.config import load_config
from export.iospec import model_io
from tests.conftest import Golden


def test_decide_needs_a_real_speedup() -> None:
    use, why = compile_choice.decide({"eager": 2.0e-3, "compiled": 1.0e-3})
    assert use and "2.00x faster" in why and "1.00 ms vs 2.00 ms eager" in why
    use, why = compile_choice.decide({"eager": 1.04e-3, "compiled": 1.0e-3})
    assert not use and "not used" in why
    use, why = compile_choice.decide({"eager": 1.0e-3, "error": "RuntimeError: boom"})
    assert not use and "failed here (RuntimeError: boom)" in why


def _fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))


def test_measured_once_kept_in_the_cache_and_remeasured_on_request(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = model_io(load_config(tiny_golden.config, resolution=64))
    calls = []

    def measure():
        calls.append(1)
        return {"eager": 3e-3, "compiled": 2e-3}

    _fake_gpu(monkeypatch)
    cache = ArtifactCache(tmp_path)
    for remeasure in (False, False, True):
        use, why = compile_choice.choose_compile(
            io, "fp16", Device("cuda"), cache, tiny_golden.checkpoint, measure, remeasure
        )
        assert use and "1.50x faster" in why and "kept in the engine cache" in why
    assert len(calls) == 2  # once, then from the cache, then --remeasure


def test_a_failing_compile_is_a_kept_verdict_for_eager(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review point 4: under --backend auto the compile measurement had no error handling, so
    a torch.compile failure killed the last GPU fallback."""
    io = model_io(load_config(tiny_golden.config, resolution=64))
    made: list[tuple[bool, bool]] = []

    def make(compiled: bool):
        # The real factory (engines.torch_engine.create_torch_engine): eager with a CUDA graph.
        made.append((compiled, not compiled))
        if compiled:
            raise RuntimeError("InductorError: CppCompileError: no C++ compiler found\nmore")
        return types.SimpleNamespace(close=lambda: None)

    monkeypatch.setattr(compile_choice, "time_frame_calls", lambda engine: 2e-3)
    _fake_gpu(monkeypatch)
    cache = ArtifactCache(tmp_path)
    for _ in range(2):
        use, why = compile_choice.choose_compile(
            io,
            "fp32",
            Device("cuda"),
            cache,
            tiny_golden.checkpoint,
            lambda: compile_choice.measure_variants(make),
        )
        assert not use
        assert "torch.compile failed here (RuntimeError: InductorError: CppCompileError" in why
        assert "running eager" in why
    assert made == [(False, True), (True, False)]  # measured once; the failure is kept


def test_a_compile_that_fails_runs_eagerly_with_a_warning(
    tiny_golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.errors import EngineWarning
    from engines.torch_engine import TorchEngine
    from export.checkpoint import load_model

    config = load_config(tiny_golden.config, resolution=64)
    model = load_model(tiny_golden.checkpoint, config)
    eager = TorchEngine(model, model_io(config), "fp32", "cpu")

    def broken_compile(module, **kwargs):
        def call(*args):
            raise RuntimeError("BackendCompilerFailed: inductor raised CppCompileError")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(EngineWarning, match="torch.compile failed on cpu .*running eagerly"):
        engine = TorchEngine(model, model_io(config), "fp32", "cpu", compile=True)
    a = tiny_golden.arrays
    source = np.ascontiguousarray(a["source"].transpose(2, 0, 1)[None])
    driving = np.ascontiguousarray(a["driving"][1].transpose(2, 0, 1)[None])
    with engine, eager:
        assert not engine.compiled and any("running eagerly" in n for n in engine.notes)
        frames = []
        for e in (engine, eager):
            e.set_avatar(source)
            frames.append(e.animate(driving).prediction)
    np.testing.assert_array_equal(frames[0], frames[1])
    with pytest.raises(RuntimeError, match="BackendCompilerFailed"):
        TorchEngine(model, model_io(config), "fp32", "cpu", compile=True, strict_compile=True)


def test_auto_does_not_compile_on_the_cpu_and_says_why(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(select, "_cuda_available", lambda: False)
    monkeypatch.setattr(
        select, "_installed", lambda module: module not in ("onnxruntime", "openvino")
    )
    config = load_config(tiny_golden.config, resolution=64)
    with create_engine(
        tiny_golden.checkpoint, config, EngineOptions(cache_dir=shared_engine_cache)
    ) as engine:
        assert engine.backend == "torch" and not engine.compiled
        assert "torch.compile not tried by --backend auto on the CPU" in engine.selection_reason
