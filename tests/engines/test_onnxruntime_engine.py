"""The onnxruntime backend: providers, session options, fixed I/O buffers, import errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from engines import EngineOptions, create_engine
from engines import onnxruntime_engine as ore
from engines.cache import ArtifactCache, onnx_artifacts
from engines.errors import EngineError
from export import threads
from export.config import load_config
from export.errors import MissingDependencyError
from tests.conftest import Golden

ort = pytest.importorskip("onnxruntime")


def test_providers_are_only_those_this_onnxruntime_has() -> None:
    from tests.engines.fake_onnxruntime import FakeOrt

    only_cpu = ore.provider_list(FakeOrt([ore.CPU_EP]), "cuda", "fp16")
    assert only_cpu == [(ore.CPU_EP, {})]  # and then the CUDA probe refuses to export
    with_cuda = ore.provider_list(
        FakeOrt([ore.TENSORRT_EP, ore.CUDA_EP, ore.CPU_EP]), "cuda", "fp16"
    )
    assert [name for name, _ in with_cuda] == [ore.CUDA_EP, ore.CPU_EP]


def test_session_options_are_tuned_for_latency(tmp_path: Path) -> None:
    options = ore.session_options(ort, tmp_path / "opt.onnx")
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.intra_op_num_threads == threads.inference_threads()
    assert options.optimized_model_filepath == str(tmp_path / "opt.onnx")
    assert 1 <= threads.inference_threads() <= threads.physical_cores() <= (os.cpu_count() or 1)


def test_warns_when_both_distributions_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ore, "installed_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with pytest.warns(RuntimeWarning, match="both 'onnxruntime' and 'onnxruntime-gpu'"):
        ore.import_onnxruntime()


@pytest.mark.parametrize(("gpu", "extra"), [(False, "cpu"), (True, "gpu")])
def test_missing_onnxruntime_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, gpu: bool, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(ore, "_cuda_visible", lambda: gpu)
    with pytest.raises(MissingDependencyError, match=rf"avatarcam\[{extra}\]"):
        ore.import_onnxruntime()


@pytest.fixture
def engine(tiny_golden: Golden, shared_engine_cache: Path):
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="onnxruntime", device="cpu", cache_dir=shared_engine_cache)
    with create_engine(tiny_golden.checkpoint, config, options) as engine:
        yield engine


def _nchw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def test_frames_reuse_fixed_buffers(engine, tiny_golden: Golden) -> None:
    a = tiny_golden.arrays
    assert engine.providers == [ore.CPU_EP]
    engine.set_avatar(_nchw(a["source"]))
    driving = engine._values["driving"]
    prediction = engine._values["prediction"]
    pointers = (driving.data_ptr(), prediction.data_ptr())
    first = engine.animate(_nchw(a["driving"][0])).prediction
    second = engine.animate(_nchw(a["driving"][1])).prediction
    assert engine._values["driving"] is driving and engine._values["prediction"] is prediction
    assert (driving.data_ptr(), prediction.data_ptr()) == pointers
    # The returned frames are copies: the next frame does not overwrite the previous one.
    assert not np.array_equal(first, second)
    assert np.abs(first[0].transpose(1, 2, 0) - a["kp_abs_prediction"][0]).max() <= 1e-4


def test_run_leaves_the_session_state_alone(engine, tiny_golden: Golden) -> None:
    a = tiny_golden.arrays
    engine.set_avatar(_nchw(a["source"]))
    before = engine.animate(_nchw(a["driving"][2])).prediction
    engine.run("avatar", {"avatar": _nchw(a["driving"][0])})  # another "avatar"
    after = engine.animate(_nchw(a["driving"][2])).prediction
    np.testing.assert_array_equal(before, after)


def test_gpu_device_without_a_gpu_provider_is_refused(
    tiny_golden: Golden, shared_engine_cache: Path
) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    paths, _ = onnx_artifacts(
        ArtifactCache(shared_engine_cache), tiny_golden.checkpoint, config, 64, 1, "fp32"
    )
    providers = [(ore.CPU_EP, {})]
    sessions = {
        graph: ore.create_session(ort, path, providers, ore.session_options(ort))
        for graph, path in paths.items()
    }
    from export.iospec import model_io

    with pytest.raises(EngineError, match="could not start a GPU execution provider"):
        ore.OnnxRuntimeEngine(sessions, model_io(config), "fp32", "cuda")


def test_unloadable_model_is_an_engine_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EngineError, match=r"could not load bad\.onnx"):
        ore.create_session(ort, bad, [(ore.CPU_EP, {})], ore.session_options(ort))


def test_batch_of_two_matches_torch(tiny_golden: Golden, shared_engine_cache: Path) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    a = tiny_golden.arrays
    avatars = np.concatenate([_nchw(a["source"]), _nchw(a["driving"][5])])
    frames = np.concatenate([_nchw(a["driving"][1]), _nchw(a["driving"][2])])
    outputs = []
    for backend in ("torch", "onnxruntime"):
        options = EngineOptions(
            backend=backend, device="cpu", batch=2, cache_dir=shared_engine_cache
        )
        with create_engine(tiny_golden.checkpoint, config, options) as engine:
            assert engine.io.batch == 2
            engine.set_avatar(avatars)
            outputs.append(engine.animate(frames).prediction)
    assert outputs[0].shape == (2, 3, 64, 64)
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-4
    # Each batch item is its own avatar and frame.
    assert np.abs(outputs[1][0] - outputs[1][1]).max() > 1e-2


def test_unloadable_cached_model_is_rebuilt(
    tiny_golden: Golden, shared_engine_cache: Path, tmp_path: Path
) -> None:
    """An optimized model whose checksum matches but that ONNX Runtime cannot load (e.g.
    written by another onnxruntime build) is dropped with a warning and rebuilt."""
    import hashlib
    import json
    import shutil

    from engines.cache import MANIFEST, CacheWarning

    cache_dir = tmp_path / "cache"
    shutil.copytree(shared_engine_cache, cache_dir)  # reuse the exported ONNX files
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="onnxruntime", device="cpu", cache_dir=cache_dir)
    create_engine(tiny_golden.checkpoint, config, options).close()
    entries = (cache_dir / "onnxruntime").glob("tiny64-64px-b1-fp32-cpu-*")
    (entry,) = [p for p in entries if p.is_dir()]
    bad = entry / "frame.optimized.onnx"
    bad.write_bytes(b"garbage")
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["files"][bad.name] = {"size": 7, "sha256": hashlib.sha256(b"garbage").hexdigest()}
    (entry / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(CacheWarning, match="could not be used"):
        engine = create_engine(tiny_golden.checkpoint, config, options)
    with engine:
        engine.set_avatar(_nchw(tiny_golden.arrays["source"]))
        frame = engine.animate(_nchw(tiny_golden.arrays["driving"][0])).prediction
    assert (
        np.abs(frame[0].transpose(1, 2, 0) - tiny_golden.arrays["kp_abs_prediction"][0]).max()
        <= 1e-4
    )
    assert bad.stat().st_size > 1000
