"""ONNX Runtime on a GPU, without one: provider requests (CUDA EP, no TF32, only option names
the real providers have), the session helper (provider sets tried in turn, verified, failures
remembered),
the CUDA probe before exporting, the check of what a session really runs, node placement and
the per-frame copies, against a fake onnxruntime (tests/engines/fake_onnxruntime.py)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from engines import onnxruntime_engine as ore
from engines import onnxruntime_providers as orp
from engines import onnxruntime_session as ors
from engines.cache import ArtifactCache
from engines.errors import EngineError, EngineWarning
from engines.failures import FailureMemory
from export.config import load_config
from export.iospec import DRIVING, model_io
from tests.conftest import Golden
from tests.engines.fake_onnxruntime import FakeOrt, FakeOrtValue, FakeSession

TRT, CUDA, CPU = orp.TENSORRT_EP, orp.CUDA_EP, orp.CPU_EP
ALL = [TRT, CUDA, CPU]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_sessions_run_on_the_cuda_provider_without_tf32(precision: str) -> None:
    # ORT's TensorRT EP builds weakly typed networks: its "fp16" may run the casts as fp32
    # layers (trt_fp16_enable=0) or the float32 math in fp16 (=1). fp16 runs on the CUDA EP.
    providers = orp.provider_list(FakeOrt(ALL), "cuda:1", precision)
    assert [name for name, _ in providers] == [CUDA, CPU]
    assert providers[0][1]["use_tf32"] == "0" and providers[0][1]["device_id"] == "1"
    assert orp.provider_list(FakeOrt(ALL), "cpu", precision) == [(CPU, {})]


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cpu"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_requested_option_is_one_the_real_provider_has(
    tmp_path: Path, device: str, precision: str
) -> None:
    ort = FakeOrt(ALL)
    providers = orp.provider_list(ort, device, precision)
    session = ore.create_session(ort, tmp_path / "m.onnx", providers, ort.SessionOptions())
    assert not ort.sessions[-1]["retried"]
    assert orp.verify_session(session, providers, device, "g") == []


def test_the_double_rejects_an_option_name_the_provider_does_not_have(tmp_path: Path) -> None:
    ort = FakeOrt(ALL)
    misspelled = [(CUDA, {"device_id": "0", "use_tf_32": "0"}), (CPU, {})]
    with pytest.raises(EngineError, match="Unknown provider option"):
        ore.create_session(ort, tmp_path / "m.onnx", misspelled, ort.SessionOptions())
    # The Python wrapper's own behaviour: retried on the CPU alone, with no options.
    session = ort.InferenceSession(
        str(tmp_path / "m.onnx"), providers=[CUDA, CPU], provider_options=[misspelled[0][1], {}]
    )
    assert ort.sessions[-1]["retried"] and session.get_providers() == [CPU]
    with pytest.raises(EngineError, match="could not start a GPU"):
        orp.verify_session(session, misspelled, "cuda", "g")


def test_the_double_retries_a_failed_tensorrt_ep_on_cuda_with_default_options(
    tmp_path: Path,
) -> None:
    ort = FakeOrt(ALL, unloadable={TRT})
    names, options = zip(*_trt_set(), strict=True)
    session = ort.InferenceSession(
        str(tmp_path / "m.onnx"), providers=list(names), provider_options=list(options)
    )
    assert ort.sessions[-1]["retried"] and session.get_providers() == [CUDA, CPU]
    with pytest.raises(EngineError, match="use_tf32=1, not the requested 0"):
        orp.verify_session(session, _cuda_set(), "cuda", "g")


def _trt_set(device_id: str = "0") -> orp.Providers:
    return [
        (TRT, {"device_id": device_id, "trt_engine_cache_enable": "1"}),
        (CUDA, {"device_id": device_id, "use_tf32": "0"}),
        (CPU, {}),
    ]


def _cuda_set(device_id: str = "0") -> orp.Providers:
    return [(CUDA, {"device_id": device_id, "use_tf32": "0"}), (CPU, {})]


def _memory(tmp_path: Path, **identity: str) -> FailureMemory:
    return FailureMemory(tmp_path / "failures.json", {"gpu": "Fake", **identity})


def test_a_provider_set_that_fails_gives_way_to_the_next_and_is_remembered(
    tmp_path: Path,
) -> None:
    ort = FakeOrt(ALL, unloadable={TRT})
    model = tmp_path / "m.onnx"
    memory = _memory(tmp_path)
    with pytest.warns(EngineWarning, match="TensorrtExecutionProvider .* failed: .*libnvinfer"):
        opened = ors.open_session(
            ort,
            model,
            [_trt_set(), _cuda_set()],
            ort.SessionOptions,
            "cuda",
            "g",
            memory,
            load_tensorrt=lambda: None,
        )
    assert opened.providers == _cuda_set()
    assert opened.session.get_provider_options()[CUDA]["use_tf32"] == "0"  # not the retry's
    assert not opened.session.fallback  # disable_fallback() was called
    assert not any(record["retried"] for record in ort.sessions)
    assert any("libnvinfer" in note for note in opened.notes)
    tries = len(ort.sessions)
    with pytest.warns(EngineWarning, match="skipped: .*remembered from"):
        again = ors.open_session(
            ort,
            model,
            [_trt_set(), _cuda_set()],
            ort.SessionOptions,
            "cuda",
            "g",
            memory,
            load_tensorrt=lambda: None,
        )
    assert again.providers == _cuda_set() and len(ort.sessions) == tries + 1
    # Another library version is another identity: tried again.
    other = _memory(tmp_path, onnxruntime="2.0")
    assert other.recall("m.onnx: " + ors.set_label(_trt_set())) is None
    memory.forget()
    assert memory.recall("m.onnx: " + ors.set_label(_trt_set())) is None


def test_tensorrt_is_imported_before_a_tensorrt_ep_session(tmp_path: Path) -> None:
    loaded = []
    ort = FakeOrt(ALL, needs_libnvinfer=lambda: bool(loaded))
    opened = ors.open_session(
        ort,
        tmp_path / "m.onnx",
        [_trt_set()],
        ort.SessionOptions,
        "cuda",
        "g",
        load_tensorrt=lambda: loaded.append("tensorrt"),
    )
    assert opened.session.get_providers() == [TRT, CUDA, CPU] and loaded == ["tensorrt"]


def test_no_provider_set_opening_is_an_error_naming_each(tmp_path: Path) -> None:
    ort = FakeOrt(ALL, active=[CPU])
    with pytest.raises(EngineError, match=r"any provider set: .*could not start a GPU"):
        ors.open_session(ort, tmp_path / "m.onnx", [_cuda_set()], ort.SessionOptions, "cuda", "g")


def test_a_gpu_engine_starts_with_its_options_when_the_tensorrt_ep_cannot_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_golden: Golden
) -> None:
    """Review point 3: the TensorRT EP is available but libnvinfer is not found; the wrapper's
    retry then ran CUDA with default options (TF32 on) and the engine refused to start."""
    import engines.onnx_recipe

    io = model_io_tiny()
    graphs = {}
    paths = {}
    for graph in (io.avatar, io.frame):
        paths[graph.name] = tmp_path / f"{graph.name}.onnx"
        paths[graph.name].write_bytes(b"onnx")
        graphs[f"{graph.name}.onnx"] = graphs[f"{graph.name}.optimized.onnx"] = graph
    ort = FakeOrt(ALL, needs_libnvinfer=lambda: False, graphs=graphs)
    monkeypatch.setattr(ore, "import_onnxruntime", lambda: ort)
    monkeypatch.setattr(ore, "pinned_zeros", lambda shape: None)
    entry = types.SimpleNamespace(digest="d")
    monkeypatch.setattr(engines.onnx_recipe, "onnx_artifacts", lambda *a: (paths, entry))
    config = load_config(tiny_golden.config, resolution=64)
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.warns(EngineWarning, match="pageable"):
        engine = ore.create_onnxruntime_engine(
            tiny_golden.checkpoint, config, io, "fp16", "cuda", cache
        )
    try:
        assert engine.providers == [CUDA, CPU]
        for session in engine._sessions.values():
            assert session.get_provider_options()[CUDA]["use_tf32"] == "0"
        assert not any(record["retried"] for record in ort.sessions)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("key", "value", "device"),
    [("use_tf32", "1", "cuda"), ("device_id", "0", "cuda:1")],
)
def test_a_session_retried_with_default_options_is_refused(
    key: str, value: str, device: str
) -> None:
    requested = orp.provider_list(FakeOrt(ALL), device, "fp16")
    options = {name: dict(opts) for name, opts in requested}
    options[CUDA][key] = value
    session = FakeSession(model_io_tiny().frame, [CUDA, CPU], options)
    with pytest.raises(EngineError, match=rf"option {key}={value}, not the requested"):
        orp.verify_session(session, requested, device, "the frame graph")


def test_a_requested_gpu_provider_that_did_not_start_is_refused() -> None:
    session = FakeSession(model_io_tiny().frame, [CUDA, CPU], {CUDA: {}})
    with pytest.raises(EngineError, match="did not start the requested Tensorrt"):
        orp.verify_session(session, _trt_set(), "cuda", "the frame graph")


def test_a_gpu_session_running_on_the_cpu_is_refused() -> None:
    session = FakeSession(model_io_tiny().frame, [CPU], {})
    requested = orp.provider_list(FakeOrt(ALL), "cuda", "fp32")
    with pytest.raises(EngineError, match="could not start a GPU execution provider"):
        orp.verify_session(session, requested, "cuda", "the frame graph")


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
    import engines.onnx_recipe

    ort = FakeOrt(available, active)
    monkeypatch.setattr(ore, "import_onnxruntime", lambda: ort)

    def no_export(*args, **kwargs):
        raise AssertionError("exported although ONNX Runtime cannot use the GPU")

    monkeypatch.setattr(engines.onnx_recipe, "onnx_artifacts", no_export)
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


@pytest.mark.parametrize("half", [True, False])
def test_an_fp16_gpu_engine_reports_whether_half_kernels_ran(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, half: bool
) -> None:
    io = model_io_tiny()
    ort = FakeOrt(ALL)
    monkeypatch.setattr(ore, "import_onnxruntime", lambda: ort)
    monkeypatch.setattr(ore, "pinned_zeros", lambda shape: (np.zeros(shape, np.float32), None))
    requested = [(CUDA, {"device_id": "0", "use_tf32": "0"}), (CPU, {})]
    sessions = {
        graph.name: FakeSession(graph, [CUDA, CPU], dict(requested), tmp_path)
        for graph in (io.avatar, io.frame)
    }
    sessions[io.frame.name].half = half
    engine = ore.OnnxRuntimeEngine(sessions, io, "fp16", "cuda", requested, profiled=True)
    try:
        evidence = engine.fp16_evidence
        assert evidence["ran_fp16"] is half and evidence["total"] == 1
        assert evidence["examples"] == (["conv (Conv)"] if half else [])
    finally:
        engine.close()


def test_half_nodes_read_a_real_profile(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="to_half"),
        helper.make_node("Relu", ["h"], ["r"], name="relu16"),
        helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="to_float"),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = orp.profiled_options(ort.SessionOptions(), tmp_path)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
    session.run(None, {"x": np.ones((1, 4), np.float32)})
    total, half = orp.half_nodes(Path(session.end_profiling()))
    assert total >= 1 and half and list(half) == [CPU]
    assert not any("(Cast)" in node for node in half[CPU])
