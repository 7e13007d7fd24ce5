"""The torch backend: devices, precisions, run() isolation, CUDA graphs (GPU only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.errors import EngineError
from engines.torch_engine import TorchEngine, cudnn_settings, resolve_device
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
    model, _ = _model(tiny_golden)
    with pytest.raises(EngineError, match="fp16 on CUDA only"):
        TorchEngine(model, precision="fp16", device="cpu")


def test_device_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineError, match="unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(EngineError, match="sees no CUDA GPU"):
        resolve_device("cuda")


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


def test_cudnn_settings_are_restored() -> None:
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.allow_tf32)
    with cudnn_settings(fp32=True):
        assert cudnn.benchmark is True and cudnn.allow_tf32 is False
    assert (cudnn.benchmark, cudnn.allow_tf32) == saved


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
