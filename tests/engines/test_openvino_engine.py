"""The openvino backend: device names, explicit precision, compiled-model cache, and the int8
frame graph (calibrated once and cached, recalibrated on demand, keypoints kept float)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import CalibrationFrames, EngineOptions, create_engine
from engines import openvino_engine as ove
from engines.errors import EngineError
from export.config import load_config
from tests.conftest import Golden

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One engine cache for this module's int8 tests (the ONNX export is made once); each test
    forces the cache state it needs with recalibrate_int8."""
    return tmp_path_factory.mktemp("int8-cache")


class FakeCore:
    def __init__(self, devices: list[str]):
        self.available_devices = devices


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _calibration(golden: Golden, calls: list[int]):
    a = golden.arrays

    def collect() -> CalibrationFrames:
        calls.append(1)
        return CalibrationFrames(
            (_uint8(a["source"]),), tuple(_uint8(d) for d in a["driving"]), "golden frames"
        )

    return collect


def test_device_names_map_to_openvinos() -> None:
    assert ove.openvino_device("cpu") == "CPU"
    assert ove.openvino_device("GPU") == "GPU"
    assert ove.openvino_device("gpu.1") == "GPU.1"
    assert ove.openvino_device(" Npu ") == "NPU"
    for bad in ("cuda", "cuda:0", "gpu:1", "tpu", ""):
        with pytest.raises(EngineError, match=r"expected cpu, gpu, gpu\.N or npu"):
            ove.openvino_device(bad)


def test_devices_openvino_does_not_see_are_refused_with_the_list() -> None:
    core = FakeCore(["CPU", "GPU.0", "GPU.1"])
    for device in ("CPU", "GPU", "GPU.1"):
        ove.check_device(core, device)
    seen = r"no NPU device here \(devices it sees: cpu, gpu\.0, gpu\.1\)"
    with pytest.raises(EngineError, match=seen):
        ove.check_device(core, "NPU")
    with pytest.raises(EngineError, match="GPU driver"):
        ove.check_device(FakeCore(["CPU"]), "GPU")
    ove.check_device(FakeCore(["CPU", "GPU"]), "GPU.0")  # one GPU answers to GPU.0 too
    with pytest.raises(EngineError):
        ove.check_device(FakeCore(["CPU", "GPU"]), "GPU.1")


def test_compile_config_sets_precision_and_latency(tmp_path: Path) -> None:
    fp32 = ove.compile_config("CPU", "fp32", tmp_path)
    assert fp32["INFERENCE_PRECISION_HINT"] == "f32"  # never OpenVINO's bf16 default
    assert fp32["PERFORMANCE_HINT"] == "LATENCY"
    assert fp32["CACHE_DIR"] == str(tmp_path)
    assert fp32["INFERENCE_NUM_THREADS"] >= 1
    assert ove.compile_config("CPU", "int8", None)["INFERENCE_PRECISION_HINT"] == "f32"
    assert ove.compile_config("GPU", "fp16", None)["INFERENCE_PRECISION_HINT"] == "f16"
    assert "INFERENCE_NUM_THREADS" not in ove.compile_config("GPU", "fp32", None)
    with pytest.raises(EngineError, match="unknown precision"):
        ove.compile_config("CPU", "bf16", None)
    with pytest.raises(EngineError, match="--precision fp16 or int8 with --device npu"):
        ove.compile_config("NPU", "fp32", None)
    assert ove.compile_config("NPU", "fp16", None)["INFERENCE_PRECISION_HINT"] == "f16"


def test_fp32_engine_is_f32_and_caches_compiled_models(
    tiny_golden: Golden, shared_engine_cache: Path
) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="openvino", device="cpu", cache_dir=shared_engine_cache)
    with create_engine(tiny_golden.checkpoint, config, options) as engine:
        assert isinstance(engine, ove.OpenVinoEngine)
        assert engine.hint == ov.Type.f32
        assert "openvino (fp32, cpu" in engine.describe()
    blobs = list((shared_engine_cache / "openvino" / "compiled").glob("*.blob"))
    assert len(blobs) >= 2  # both graphs: the next start loads instead of compiling


def test_int8_calibrates_once_then_reuses_and_recalibrates_on_demand(
    tiny_golden: Golden, int8_cache: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="openvino", precision="int8", cache_dir=int8_cache)
    again = EngineOptions(
        backend="openvino", precision="int8", cache_dir=int8_cache, recalibrate_int8=True
    )
    calls: list[int] = []
    with create_engine(tiny_golden.checkpoint, config, again, _calibration(tiny_golden, calls)):
        pass
    err = capfd.readouterr().err
    assert len(calls) == 1
    assert "calibrating int8 on 4 samples: 1 avatar(s) x 4 driving frame(s) (golden frames" in err
    assert "int8 calibration and check done in" in err
    with create_engine(tiny_golden.checkpoint, config, options, _calibration(tiny_golden, calls)):
        pass
    assert len(calls) == 1  # cached: no frames captured, no calibration
    assert "calibrating" not in capfd.readouterr().err
    with create_engine(tiny_golden.checkpoint, config, again, _calibration(tiny_golden, calls)):
        pass
    assert len(calls) == 2
    assert "dropped the cached int8 model" in capfd.readouterr().err


def test_int8_without_calibration_frames_says_how_to_give_them(
    tiny_golden: Golden, int8_cache: Path
) -> None:
    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(
        backend="openvino", precision="int8", cache_dir=int8_cache, recalibrate_int8=True
    )
    with pytest.raises(EngineError, match="needs calibration frames") as info:
        create_engine(tiny_golden.checkpoint, config, options)
    assert "calibration=CalibrationFrames" in str(info.value)


def test_int8_quantizes_only_generator_layers(tiny_golden: Golden, int8_cache: Path) -> None:
    from engines import int8

    config = load_config(tiny_golden.config, resolution=64)
    options = EngineOptions(backend="openvino", precision="int8", cache_dir=int8_cache)
    with create_engine(tiny_golden.checkpoint, config, options, _calibration(tiny_golden, [])):
        pass
    (xml,) = (int8_cache / "openvino-int8").glob("*/" + int8.MODEL_XML)
    (frame_onnx,) = (int8_cache / "onnx").glob("*/*.frame.onnx")
    float_nodes = set(int8.float_node_names(frame_onnx))
    assert any("kp_detector" not in n for n in float_nodes)
    model = ov.Core().read_model(str(xml))
    consumers = [
        target.get_node()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "FakeQuantize"
        for target in op.output(0).get_target_inputs()
    ]
    assert len(consumers) >= 10
    for node in consumers:
        assert node.get_type_name() in int8.INT8_TYPES, node.get_friendly_name()
        assert node.get_friendly_name().split("/")[0] not in float_nodes


def test_calibration_frames_are_checked() -> None:
    with pytest.raises(EngineError, match="at least one avatar and one driving frame"):
        CalibrationFrames((np.zeros((64, 64, 3), np.uint8),), ())
    frames = CalibrationFrames((np.zeros((64, 64, 3), np.uint8),), (np.zeros((32, 32, 3)),))
    with pytest.raises(TypeError, match="expected \\(64, 64, 3\\) uint8"):
        frames.check(64)
