"""TensorRTEngine without a GPU: binding, execution, CUDA-graph capture and replay (with an
avatar change after capture and a refused enqueue during capture), pinned staging, stream
order and release, against the test double in tests/engines/fake_tensorrt.py, which runs the
real exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import EngineOptions, create_engine
from engines.errors import EngineWarning
from export.config import load_config
from export.iospec import DRIVING
from export.motion import relative_motion
from tests.conftest import Golden
from tests.engines.fake_tensorrt import FakeCuda, fake_tensorrt, install

pytest.importorskip("onnxruntime")  # the double runs the exported graphs in ONNX Runtime


def _nchw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def _start(tiny_golden, cache: Path, monkeypatch, precision="fp32", cuda_graph=False, **fake):
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda, **fake)
    install(monkeypatch, cuda, trt)
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(
        backend="tensorrt",
        device="cuda",
        precision=precision,
        cuda_graph=cuda_graph,
        cache_dir=cache,
    )
    return create_engine(tiny_golden.checkpoint, config, options), cuda, trt


def _frames(engine, a) -> np.ndarray:
    src = engine.set_avatar(_nchw(a["source"]))
    ref = engine.animate(_nchw(a["driving"][0])).driving
    engine.set_motion(relative_motion(src.value, src.jacobian, ref.value, ref.jacobian, True))
    frames = [engine.animate(_nchw(d)).prediction for d in a["driving"]]
    # A new avatar after capture: the captured graph must read the new state.
    engine.set_avatar(_nchw(a["driving"][3]))
    frames.append(engine.animate(_nchw(a["driving"][2])).prediction)
    return np.stack(frames)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_recipe_reaches_the_runtime(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch, precision: str
) -> None:
    engine, _, trt = _start(tiny_golden, shared_engine_cache, monkeypatch, precision)
    with engine:
        headers = [e.header for e in trt.engines]
    assert len(headers) == 2
    # TF32 cleared in both precisions; fp16 strongly typed (never BuilderFlag.FP16).
    assert all(h["flags"] == [] for h in headers)
    assert all(h["strongly_typed"] == (precision == "fp16") for h in headers)
    # Built with detailed layer information; fp16: the inspector shows half layers.
    assert all(h["detailed"] for h in headers)
    if precision == "fp16":
        evidence = engine.fp16_evidence
        assert evidence["ran_fp16"] and 0 < evidence["half"] < evidence["total"], evidence
    else:
        assert engine.fp16_evidence is None


def test_the_inspector_shows_no_half_layers_in_a_weakly_typed_fp16_build(
    tiny_golden: Golden, tmp_path: Path, monkeypatch
) -> None:
    """What ONNX Runtime's TensorRT EP did (weakly typed, trt_fp16_enable=0): the graph's
    casts run as fp32 layers, and the evidence says so."""
    from export import tensorrt_build

    real = tensorrt_build.build_engine

    def weakly_typed(onnx_path, engine_path, settings, timing_cache=None, report=print):
        trt = tensorrt_build.import_tensorrt()
        create = trt.Builder.create_network
        trt.Builder.create_network = lambda self, flags: create(self, 0)
        try:
            return real(onnx_path, engine_path, settings, timing_cache, report)
        finally:
            trt.Builder.create_network = create

    monkeypatch.setattr(tensorrt_build, "build_engine", weakly_typed)
    engine, _, _ = _start(tiny_golden, tmp_path, monkeypatch, "fp16")
    with engine:
        assert engine.fp16_evidence["ran_fp16"] is False
        assert engine.fp16_evidence["half"] == 0


def test_binding_staging_and_stream_order(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    engine, cuda, trt = _start(tiny_golden, shared_engine_cache, monkeypatch)
    a = tiny_golden.arrays
    stream = engine._stream.cuda_stream
    # Every buffer was allocated (and zero-filled) on the engine's stream.
    assert cuda.allocations and set(cuda.allocations) == {stream}
    # Each context is bound, once, to the shared buffers.
    for context in (c for e in trt.engines for c in e.contexts):
        for name, address in context.addresses.items():
            assert address == engine._buffers[name].data_ptr()
    assert (
        trt.engines[0].contexts[0].addresses["avatar_kp"]
        == trt.engines[1].contexts[0].addresses["avatar_kp"]
    )
    # Host data goes through page-locked staging buffers.
    staged = [*engine._host_in.values(), *engine._host_out.values()]
    assert {t.data_ptr() for t in staged} <= cuda.pinned_addresses
    assert set(engine._host_out) >= set(engine.io.frame.output_names)
    engine.set_avatar(_nchw(a["source"]))
    first = engine.animate(_nchw(a["driving"][1])).prediction
    second = engine.animate(_nchw(a["driving"][2])).prediction
    assert not np.shares_memory(first, engine._host_out["prediction"].numpy())
    assert not np.array_equal(first, second)
    np.testing.assert_allclose(
        first[0].transpose(1, 2, 0), a["kp_abs_prediction"][1], atol=1e-4, rtol=0
    )
    # Release waits for the stream while the buffers are still alive.
    alive: list[int] = []
    cuda.on_sync = lambda: alive.append(len(engine._buffers))
    engine.close()
    assert alive and alive[-1] > 0


def test_run_uses_its_own_buffers(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    engine, _, _ = _start(tiny_golden, shared_engine_cache, monkeypatch)
    a = tiny_golden.arrays
    with engine:
        engine.set_avatar(_nchw(a["source"]))
        before = engine.animate(_nchw(a["driving"][2])).prediction
        state = engine.run("avatar", {"avatar": _nchw(a["driving"][0])})
        np.testing.assert_array_equal(before, engine.animate(_nchw(a["driving"][2])).prediction)
        assert not np.allclose(state["avatar_kp"], engine._host_out["avatar_kp"].numpy())


def test_cuda_graph_replays_and_follows_a_new_avatar(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    a = tiny_golden.arrays
    results = []
    for cuda_graph in (False, True):
        engine, cuda, trt = _start(
            tiny_golden, shared_engine_cache, monkeypatch, "fp16", cuda_graph
        )
        with engine:
            results.append(_frames(engine, a))
            frame_context = trt.engines[1].contexts[0]
            replays = [e for e in cuda.events if e[0] == "replay"]
            if cuda_graph:
                assert engine.cuda_graph and engine._graph is not None
                # One plain enqueue (TensorRT's warm-up) before capture, then replays only.
                assert frame_context.enqueues == 1
                assert len(replays) == len(a["driving"]) + 1 and replays[0][1] == 1
            else:
                assert not replays
    np.testing.assert_array_equal(results[0], results[1])


def test_a_refused_enqueue_during_capture_falls_back_to_plain_enqueues(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    a = tiny_golden.arrays
    eager, _, _ = _start(tiny_golden, shared_engine_cache, monkeypatch)
    with eager:
        expected = _frames(eager, a)
    engine, cuda, _ = _start(
        tiny_golden, shared_engine_cache, monkeypatch, cuda_graph=True, refuse_in_capture=True
    )
    with engine, pytest.warns(EngineWarning, match="refused the enqueue while capturing"):
        frames = _frames(engine, a)
    assert engine.cuda_graph is False
    assert "capture" in engine.selection_reason or any("capture" in n for n in engine.notes)
    # Without the check every frame would repeat the first one (an empty graph replayed).
    np.testing.assert_array_equal(frames, expected)
    assert not any(e[0] == "replay" for e in cuda.events)


def test_driving_upload_is_staged_per_frame(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    engine, _, _ = _start(tiny_golden, shared_engine_cache, monkeypatch)
    a = tiny_golden.arrays
    with engine:
        engine.set_avatar(_nchw(a["source"]))
        staging = engine._host_in[DRIVING]
        engine.animate(_nchw(a["driving"][4]))
        np.testing.assert_array_equal(staging.numpy(), _nchw(a["driving"][4]))
        np.testing.assert_array_equal(engine._buffers[DRIVING].numpy(), staging.numpy())


def test_the_double_defers_stream_work_until_a_synchronization(
    tiny_golden: Golden, shared_engine_cache: Path, monkeypatch
) -> None:
    """As on a GPU: without the stream synchronization the host buffers still hold the last
    frame (so the engine's synchronization is what makes its outputs right)."""
    engine, _, _ = _start(tiny_golden, shared_engine_cache, monkeypatch)
    a = tiny_golden.arrays
    with engine:
        engine.set_avatar(_nchw(a["source"]))
        first = engine.animate(_nchw(a["driving"][1])).prediction
        stream = engine._stream
        stream.synchronize = lambda: None  # an engine that forgot to synchronize
        try:
            stale = engine.animate(_nchw(a["driving"][2])).prediction
            assert stream.pending  # upload, enqueue and downloads are still queued
        finally:
            del stream.synchronize
        np.testing.assert_array_equal(stale, first)
        stream.synchronize()
        np.testing.assert_array_equal(
            engine._host_out["prediction"].numpy(),
            engine.animate(_nchw(a["driving"][2])).prediction,
        )
        assert not np.array_equal(engine._host_out["prediction"].numpy(), first)
