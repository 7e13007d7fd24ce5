"""--backend auto and torch.compile: measured once per model/GPU/torch, kept in the cache,
used only when faster, and the reason is always given."""

from __future__ import annotations

from pathlib import Path

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


def test_measured_once_and_kept_in_the_cache(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    io = model_io(config)
    calls = []

    def measure(model, io, precision, device):
        calls.append(device)
        return {"eager": 3e-3, "compiled": 2e-3}

    monkeypatch.setattr(compile_choice, "measure", measure)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    cache = ArtifactCache(tmp_path)
    for _ in range(2):
        use, why = compile_choice.choose_compile(
            None, io, "fp16", Device("cuda"), cache, tiny_golden.checkpoint
        )
        assert use and "1.50x faster" in why and "kept in the engine cache" in why
    assert calls == [Device("cuda")]


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
