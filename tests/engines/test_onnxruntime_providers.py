"""ONNX Runtime on a GPU, without one: provider requests (strongly typed TensorRT, no TF32),
the CUDA probe before exporting, the check of what a session really runs, node placement and
the per-frame copies, against a fake onnxruntime (tests/engines/fake_onnxruntime.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines import onnxruntime_engine as ore
from engines import onnxruntime_providers as orp
from engines.errors import EngineError, EngineWarning
from export.config import load_config
from export.iospec import DRIVING, model_io
from tests.conftest import Golden
from tests.engines.fake_onnxruntime import FakeOrt, FakeOrtValue, FakeSession

TRT, CUDA, CPU = orp.TENSORRT_EP, orp.CUDA_EP, orp.CPU_EP
ALL = [TRT, CUDA, CPU]


def test_fp16_tensorrt_provider_builds_the_mixed_graph_strongly_typed(tmp_path: Path) -> None:
    # trt_fp16_enable=1 would let TensorRT run the float32 keypoint math in fp16.
    fp16 = orp.provider_list(FakeOrt(ALL), "cuda:1", "fp16", tmp_path)
    assert [name for name, _ in fp16] == ALL
    trt_options, cuda_options = fp16[0][1], fp16[1][1]
    assert trt_options["trt_fp16_enable"] == "0"
    assert trt_options["device_id"] == "1" and cuda_options["device_id"] == "1"
    assert trt_options["trt_engine_cache_path"] == str(tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float32_layers_never_use_tf32(tmp_path: Path, precision: str) -> None:
    providers = dict(orp.provider_list(FakeOrt(ALL), "cuda", precision, tmp_path))
    assert providers[CUDA]["use_tf32"] == "0"  # the same in both modes, as in every backend
    if precision == "fp32":
        # The TensorRT EP cannot turn TF32 off: fp32 does not use it.
        assert TRT not in providers
    assert orp.provider_list(FakeOrt(ALL), "cpu", precision, tmp_path) == [(CPU, {})]


def test_tensorrt_ep_engines_are_built_with_tf32_overridden_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    ort = FakeOrt(ALL)
    providers = orp.provider_list(ort, "cuda", "fp16", tmp_path)
    ore.create_session(ort, tmp_path / "m.onnx", providers, ort.SessionOptions())
    ore.create_session(ort, tmp_path / "m.onnx", [(CUDA, {}), (CPU, {})], ort.SessionOptions())
    assert [s["tf32_override"] for s in ort.sessions] == ["0", None]
    assert "NVIDIA_TF32_OVERRIDE" not in os.environ  # restored


def _requested(tmp_path: Path, device: str = "cuda") -> orp.Providers:
    return orp.provider_list(FakeOrt(ALL), device, "fp16", tmp_path)


def test_a_tensorrt_ep_that_did_not_load_is_a_visible_warning(tmp_path: Path) -> None:
    requested = _requested(tmp_path)
    session = FakeSession(model_io_tiny().frame, [CUDA, CPU], dict(requested))
    with pytest.warns(EngineWarning, match="TensorRT provider did not load"):
        notes = orp.check_session(session, requested, "cuda", "the frame graph")
    assert len(notes) == 1 and "Fix: pip install 'avatarcam[gpu]'" in notes[0]


@pytest.mark.parametrize(
    ("key", "value", "device"),
    [("use_tf32", "1", "cuda"), ("device_id", "0", "cuda:1"), ("trt_fp16_enable", "1", "cuda")],
)
def test_a_session_retried_with_default_options_is_refused(
    tmp_path: Path, key: str, value: str, device: str
) -> None:
    requested = _requested(tmp_path, device)
    options = {name: dict(opts) for name, opts in requested}
    provider = TRT if key == "trt_fp16_enable" else CUDA
    options[provider][key] = value
    session = FakeSession(model_io_tiny().frame, [TRT, CUDA, CPU], options)
    with pytest.raises(EngineError, match=rf"option {key}={value}, not the requested"):
        orp.check_session(session, requested, device, "the frame graph")


def test_a_gpu_session_running_on_the_cpu_is_refused(tmp_path: Path) -> None:
    session = FakeSession(model_io_tiny().frame, [CPU], {})
    with pytest.raises(EngineError, match="could not start a GPU execution provider"):
        orp.check_session(session, _requested(tmp_path), "cuda", "the frame graph")


def model_io_tiny():
    from tests.conftest import load_golden

    golden = load_golden("tiny64")
    return model_io(load_config(golden.config, resolution=64))


@pytest.fixture
def fake_gpu_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An OnnxRuntimeEngine on 'cuda' over fake sessions; pinned buffers recorded."""
    io = model_io_tiny()
    ort = FakeOrt(ALL)
    monkeypatch.setattr(ore, "import_onnxruntime", lambda: ort)
    pinned: list[tuple[int, ...]] = []

    def pinned_zeros(shape):
        pinned.append(tuple(shape))
        return np.zeros(shape, np.float32), object()

    monkeypatch.setattr(ore, "pinned_zeros", pinned_zeros)
    requested = [(CUDA, {"device_id": "0", "use_tf32": "0"}), (CPU, {})]
    sessions = {
        graph.name: FakeSession(graph, [CUDA, CPU], dict(requested), tmp_path)
        for graph in (io.avatar, io.frame)
    }
    sessions[io.frame.name].cpu_nodes = ["warp_grid"]
    with pytest.warns(EngineWarning, match=r"1 of 2 nodes run on the CPU.*warp_grid"):
        engine = ore.OnnxRuntimeEngine(sessions, io, "fp32", "cuda", requested, profiled=True)
    yield engine, sessions, pinned
    engine.close()


def test_cpu_nodes_of_a_gpu_session_are_reported(fake_gpu_engine) -> None:
    engine, sessions, _ = fake_gpu_engine
    assert any("warp_grid (GridSample)" in note for note in engine.notes)
    assert all(session.runs == 1 for session in sessions.values())  # the profiled warm-up


def test_frames_use_pinned_staging_and_one_copy_per_output(fake_gpu_engine) -> None:
    engine, sessions, pinned = fake_gpu_engine
    io = engine.io
    staged = {DRIVING, *io.frame.output_names}
    assert sorted(pinned) == sorted(io.frame.tensor(name).shape for name in staged)
    rng = np.random.default_rng(0)
    engine.set_avatar(rng.random(io.avatar.tensor("avatar").shape, np.float32))
    before = FakeOrtValue.downloads
    driving = rng.random(io.frame.tensor(DRIVING).shape, np.float32)
    first = engine.animate(driving)
    second = engine.animate(driving * 0.5)
    # No device OrtValue is downloaded per frame: the outputs arrive in the pinned buffers.
    assert FakeOrtValue.downloads == before
    # The frames are the session's numbers, and copies (the next frame does not change them).
    frame_in = {name: engine._values[name].data for name in io.frame.input_names}
    frame_in[DRIVING] = driving * 0.5
    expected = sessions[io.frame.name].compute(frame_in)
    np.testing.assert_allclose(second.prediction, expected["prediction"], rtol=1e-6)
    assert not np.array_equal(first.prediction, second.prediction)


def test_run_leaves_the_fake_gpu_session_state_alone(fake_gpu_engine) -> None:
    engine, _, _ = fake_gpu_engine
    io = engine.io
    avatar = np.full(io.avatar.tensor("avatar").shape, 0.25, np.float32)
    engine.set_avatar(avatar)
    state = {name: engine._values[name].data.copy() for name in io.avatar.output_names}
    out = engine.run("avatar", {"avatar": np.ones_like(avatar)})
    for name in io.avatar.output_names:
        np.testing.assert_array_equal(engine._values[name].data, state[name])
        assert not np.array_equal(out[name], state[name])


@pytest.mark.parametrize(
    ("available", "active", "match"),
    [
        ([CPU], [CPU], "no CUDA execution provider"),
        ([TRT, CUDA, CPU], [CPU], "CUDA provider did not load"),
    ],
)
def test_the_cuda_provider_is_proven_before_exporting(
    tiny_golden: Golden,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    available: list[str],
    active: list[str],
    match: str,
) -> None:
    import engines.cache

    ort = FakeOrt(available, active)
    monkeypatch.setattr(ore, "import_onnxruntime", lambda: ort)

    def no_export(*args, **kwargs):
        raise AssertionError("exported although ONNX Runtime cannot use the GPU")

    monkeypatch.setattr(engines.cache, "onnx_artifacts", no_export)
    config = load_config(tiny_golden.config, resolution=64)
    with pytest.raises(EngineError, match=match) as info:
        ore.create_onnxruntime_engine(
            tiny_golden.checkpoint, config, model_io(config), "fp32", "cuda", None
        )
    assert "pip install 'avatarcam[gpu]'" in str(info.value)
    if CUDA in available:
        assert ort.preloaded  # onnxruntime.preload_dlls() ran before the probe session


def test_placement_reads_a_real_profile(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    options = orp.profiled_options(ort.SessionOptions(), tmp_path)
    session = ort.InferenceSession(orp._tiny_model(), options, providers=[CPU])
    session.run(None, {"x": np.ones((1, 4), np.float32)})
    by_provider = orp.placement(Path(session.end_profiling()))
    assert by_provider == {CPU: ["probe (Relu)"]}
    assert "1 of 1 nodes run on the CPU" in orp.cpu_nodes_note(by_provider, "g")
    assert orp.cpu_nodes_note({CUDA: ["a (Conv)"]}, "g") is None
