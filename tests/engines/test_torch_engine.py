"""The torch backend: devices, precisions, run() isolation, CUDA graphs (GPU only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.device import resolve
from engines.errors import EngineError, EngineUsageError, EngineWarning
from engines.torch_engine import TorchEngine, cudnn_settings
from export.checkpoint import load_model
from export.config import load_config
from export.iospec import model_io
from export.motion import relative_motion
from tests.conftest import Golden

needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine (PyTorch sees none)"
)


def _model(golden: Golden):
    config = load_config(golden.config, resolution=golden.resolution)
    return load_model(golden.checkpoint, config), config


def _nchw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def test_fp16_needs_cuda(tiny_golden: Golden) -> None:
    # Selection refuses fp16 on the CPU with a user error; the constructor is a backstop.
    model, _ = _model(tiny_golden)
    with pytest.raises(ValueError, match="fp16 on CUDA only"):
        TorchEngine(model, precision="fp16", device="cpu")


def test_device_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineError, match="unknown device"):
        resolve("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(resolve("auto")) == "cpu"
    with pytest.raises(EngineError, match="sees no CUDA GPU"):
        resolve("cuda")


def test_animate_before_set_avatar_is_a_programming_error(tiny_golden: Golden) -> None:
    model, config = _model(tiny_golden)
    engine = TorchEngine(model, model_io(config), device="cpu")
    with pytest.raises(EngineUsageError, match=r"before set_avatar\(\)") as info:
        engine.animate(_nchw(tiny_golden.arrays["driving"][0]))
    assert isinstance(info.value, RuntimeError) and not isinstance(info.value, EngineError)
    engine.close()
    with pytest.raises(EngineUsageError, match="closed"):
        engine.set_avatar(_nchw(tiny_golden.arrays["source"]))


def test_cuda_graph_is_ignored_on_cpu(tiny_golden: Golden) -> None:
    model, _ = _model(tiny_golden)
    engine = TorchEngine(model, device="cpu", cuda_graph=True)
    assert engine.cuda_graph is False
    engine.close()


def test_run_leaves_the_session_state_alone(tiny_golden: Golden) -> None:
    model, config = _model(tiny_golden)
    a = tiny_golden.arrays
    with TorchEngine(model, model_io(config), device="cpu") as engine:
        engine.set_avatar(_nchw(a["source"]))
        before = engine.animate(_nchw(a["driving"][1])).prediction
        engine.run("avatar", {"avatar": _nchw(a["driving"][0])})
        np.testing.assert_array_equal(before, engine.animate(_nchw(a["driving"][1])).prediction)


def test_cudnn_settings_turn_tf32_off_and_restore() -> None:
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.conv.fp32_precision, matmul.fp32_precision)
    with cudnn_settings():
        assert cudnn.benchmark is True
        assert cudnn.conv.fp32_precision == "ieee" and matmul.fp32_precision == "ieee"
    assert (cudnn.benchmark, cudnn.conv.fp32_precision, matmul.fp32_precision) == saved


def test_tf32_off_works_on_a_torch_without_the_fp32_precision_api() -> None:
    """torch 2.2 to 2.8 (pyproject allows >= 2.2) have only the legacy allow_tf32 flags."""
    import types

    from engines.torch_engine import tf32_off

    backends = types.SimpleNamespace(
        cudnn=types.SimpleNamespace(allow_tf32=True, benchmark=False),
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True)),
    )
    with tf32_off(backends):
        assert not backends.cudnn.allow_tf32 and not backends.cuda.matmul.allow_tf32
    assert backends.cudnn.allow_tf32 and backends.cuda.matmul.allow_tf32


def test_cudnn_settings_work_after_the_new_tf32_api_was_used() -> None:
    """Reading the legacy cudnn.allow_tf32 raises once anything in the process has set
    cudnn.conv.fp32_precision (and the RNN flag differs)."""
    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    conv.fp32_precision = "tf32" if saved != "tf32" else "ieee"
    try:
        with pytest.raises(RuntimeError, match="legacy and new APIs"):
            _ = torch.backends.cudnn.allow_tf32  # what the old code did
        with cudnn_settings():
            assert conv.fp32_precision == "ieee"
        assert conv.fp32_precision != "ieee" or saved == "tf32"
    finally:
        conv.fp32_precision = saved


def test_cuda_graph_capture_failure_falls_back_to_eager_on_the_engine_gpu(
    tiny_golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture runs under torch.cuda.device(the engine's GPU); a capture that raises leaves a
    warning and an engine that runs eagerly (simulated on the CPU with a fake torch.cuda)."""
    model, config = _model(tiny_golden)
    a = tiny_golden.arrays
    entered: list[torch.device] = []

    class FakeStream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    import contextlib

    @contextlib.contextmanager
    def device(dev):
        entered.append(torch.device(dev))
        yield

    class Graph:
        pass

    def graph(g, *args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    with TorchEngine(model, model_io(config), device="cpu") as engine:
        eager = TorchEngine(model, model_io(config), device="cpu")
        # What a cuda:1 engine with a CUDA graph looks like, on the CPU.
        engine.cuda_graph = True
        engine._dev = torch.device("cpu")
        engine._static = {t.name: torch.zeros(t.shape) for t in engine.io.frame.inputs}
        engine.set_avatar(_nchw(a["source"]))
        eager.set_avatar(_nchw(a["source"]))
        with pytest.warns(EngineWarning, match="CUDA graph capture .* failed"):
            frame = engine.animate(_nchw(a["driving"][1])).prediction
        assert entered == [torch.device("cpu")]
        assert engine.cuda_graph is False and any("capture" in n for n in engine.notes)
        np.testing.assert_allclose(frame, eager.animate(_nchw(a["driving"][1])).prediction)
        np.testing.assert_allclose(
            engine.animate(_nchw(a["driving"][2])).prediction,
            eager.animate(_nchw(a["driving"][2])).prediction,
        )
        eager.close()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graph_matches_eager(tiny_golden: Golden, precision: str) -> None:
    model, config = _model(tiny_golden)
    a = tiny_golden.arrays
    io = model_io(config)
    results = []
    for cuda_graph in (False, True):
        with TorchEngine(model, io, precision, "cuda", cuda_graph=cuda_graph) as engine:
            src = engine.set_avatar(_nchw(a["source"]))
            ref = engine.animate(_nchw(a["driving"][0])).driving
            engine.set_motion(relative_motion(src.value, src.jacobian, ref.value, ref.jacobian))
            frames = [engine.animate(_nchw(d)).prediction for d in a["driving"]]
            # A new avatar after capture must be picked up by the captured graph.
            engine.set_avatar(_nchw(a["driving"][3]))
            frames.append(engine.animate(_nchw(a["driving"][2])).prediction)
            results.append(np.stack(frames))
    assert np.abs(results[0] - results[1]).max() <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs two CUDA GPUs (captures on cuda:1 while cuda:0 is current)",
)
def test_cuda_graph_on_the_second_gpu(tiny_golden: Golden) -> None:
    model, config = _model(tiny_golden)
    a = tiny_golden.arrays
    torch.cuda.set_device(0)
    with TorchEngine(model, model_io(config), "fp32", "cuda:1", cuda_graph=True) as engine:
        engine.set_avatar(_nchw(a["source"]))
        frame = engine.animate(_nchw(a["driving"][1])).prediction
        assert engine.cuda_graph and engine._static_out[0].device == torch.device("cuda:1")
    assert np.abs(frame[0].transpose(1, 2, 0) - a["kp_abs_prediction"][1]).max() <= 1e-3


def test_cpu_engine_runs_channels_last_with_inference_threads(tiny_golden: Golden) -> None:
    from export.threads import inference_threads

    model, _ = _model(tiny_golden)
    engine = TorchEngine(model, precision="fp32", device="cpu")
    convs = [m for m in engine._model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    driving = engine._to_device("driving", np.zeros((1, 3, 64, 64), np.float32))
    assert driving.is_contiguous(memory_format=torch.channels_last)
    assert torch.get_num_threads() == inference_threads()
    # Outputs come back as plain C-ordered NCHW arrays whatever the engine's layout.
    out = engine._to_host("prediction", driving)
    assert out.flags.c_contiguous and out.shape == (1, 3, 64, 64)
    engine.close()
