"""Config loading: presets, original YAML files, other members of the architecture family."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from export.config import PRESETS, ConfigError, load_config
from export.iospec import model_io
from export.model import FOMM, Keypoints
from tests.conftest import Golden


def test_default_is_vox_256() -> None:
    config = load_config()
    assert config.name == "vox-256"
    assert config.resolution == 256
    assert config.num_kp == 10 and config.estimate_jacobian
    assert not config.kp_detector.single_jacobian_map


def test_mgif_uses_a_single_jacobian_map() -> None:
    assert PRESETS["mgif-256"].num_jacobian_maps == 1
    assert PRESETS["vox-256"].num_jacobian_maps == 10


def test_yaml_file_matches_golden_config(golden: Golden) -> None:
    config = load_config(golden.config)
    raw = yaml.safe_load(golden.config.read_text())["model_params"]
    assert config.num_kp == raw["common_params"]["num_kp"]
    assert config.kp_detector.scale_factor == raw["kp_detector_params"]["scale_factor"]
    dense = raw["generator_params"]["dense_motion_params"]
    assert config.generator.dense_motion.max_features == dense["max_features"]


def test_original_yaml_with_other_sections(tmp_path: Path) -> None:
    """The original configs carry dataset/training sections; only model_params matters."""
    text = """
dataset_params:
  root_dir: data/vox-png
  frame_shape: [384, 384, 3]
model_params:
  common_params: {num_kp: 10, num_channels: 3, estimate_jacobian: True}
  kp_detector_params:
     {temperature: 0.1, block_expansion: 32, max_features: 1024, scale_factor: 0.25, num_blocks: 5}
  generator_params:
    block_expansion: 64
    max_features: 512
    num_down_blocks: 2
    num_bottleneck_blocks: 6
    estimate_occlusion_map: True
    dense_motion_params:
      {block_expansion: 64, max_features: 1024, num_blocks: 5, scale_factor: 0.25}
  discriminator_params: {scales: [1], block_expansion: 32, max_features: 512, sn: True}
train_params: {num_epochs: 100}
"""
    path = tmp_path / "vox-384.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.resolution == 384
    assert replace(config, name="vox-256", resolution=256) == PRESETS["vox-256"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("does-not-exist.yaml", "does not exist"),
        ("vox-1024", "Unknown config"),
    ],
)
def test_bad_config_names(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(spec)


def test_yaml_without_model_params(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("dataset_params: {}\n")
    with pytest.raises(ConfigError, match="model_params"):
        load_config(path)


def test_yaml_with_wrong_type(tmp_path: Path, golden: Golden) -> None:
    data = yaml.safe_load(golden.config.read_text())
    data["model_params"]["common_params"]["num_kp"] = "ten"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="num_kp"):
        load_config(path)


def test_unparseable_yaml(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("model_params: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)


@pytest.mark.parametrize("resolution", [16, 1024, 200])
def test_bad_resolutions(resolution: int) -> None:
    with pytest.raises(ConfigError, match="--resolution"):
        load_config("vox-256", resolution=resolution)


def _tiny(**changes) -> object:
    base = load_config("vox-256")
    tiny = replace(
        base,
        num_kp=changes.pop("num_kp", 4),
        estimate_jacobian=changes.pop("estimate_jacobian", True),
        kp_detector=replace(
            base.kp_detector,
            block_expansion=4,
            max_features=16,
            num_blocks=2,
            scale_factor=changes.pop("kp_scale", 0.5),
            single_jacobian_map=changes.pop("single", False),
        ),
        generator=replace(
            base.generator,
            block_expansion=4,
            max_features=16,
            num_bottleneck_blocks=1,
            estimate_occlusion_map=changes.pop("occlusion", True),
            dense_motion=replace(
                base.generator.dense_motion,
                block_expansion=4,
                max_features=16,
                num_blocks=2,
                scale_factor=changes.pop("dm_scale", 0.5),
            ),
        ),
    )
    assert not changes
    return tiny


@pytest.mark.parametrize(
    "changes",
    [
        {"num_kp": 7},
        {"single": True},
        {"estimate_jacobian": False},
        {"occlusion": False},
        {"kp_scale": 1.0, "dm_scale": 1.0},
        {"kp_scale": 0.25, "dm_scale": 0.25},
    ],
    ids=["7kp", "single-jacobian", "no-jacobian", "no-occlusion", "full-scale", "quarter"],
)
@pytest.mark.parametrize("resolution", [64, 128])
def test_architecture_family_runs(changes: dict, resolution: int) -> None:
    """Other keypoint counts, single/no jacobian, no occlusion, other scales and sizes."""
    config = replace(_tiny(**changes), resolution=resolution)
    model = FOMM(config)
    io = model_io(config)
    image = torch.rand(1, 3, resolution, resolution)
    with torch.no_grad():
        kp = model.keypoints(image)
        assert kp.value.shape == (1, config.num_kp, 2)
        assert (kp.jacobian is None) == (not config.estimate_jacobian)
        out = model.animate(image, kp, Keypoints(kp.value + 0.05, kp.jacobian))
        features, small = model.generator.encode(image)
    assert out.prediction.shape == (1, 3, resolution, resolution)
    assert (out.motion.occlusion_map is None) == (not config.generator.estimate_occlusion_map)
    assert io.avatar.tensor("avatar_features").shape == tuple(features.shape)
    assert io.avatar.tensor("avatar_small").shape == tuple(small.shape)
    assert ("avatar_jacobian" in io.frame.input_names) == config.estimate_jacobian


@pytest.mark.parametrize("resolution", [128, 384, 512])
def test_vox_shapes_at_other_resolutions(resolution: int) -> None:
    config = load_config("vox-256", resolution=resolution)
    io = model_io(config)
    assert io.frame.tensor("prediction").shape == (1, 3, resolution, resolution)
    assert io.avatar.tensor("avatar_small").shape == (1, 3, resolution // 4, resolution // 4)


# --- misspelled keys and dataset_params (issue 10) ---------------------------------------------


def _tiny_yaml(golden: Golden, tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(golden.config.read_text())
    edit(data)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("section", "wrong", "right"),
    [
        (("common_params",), "num_kpp", "num_kp"),
        (("kp_detector_params",), "temprature", "temperature"),
        (("generator_params", "dense_motion_params"), "block_expanson", "block_expansion"),
    ],
)
def test_misspelled_key_names_the_closest(tiny_golden, tmp_path, section, wrong, right) -> None:
    def edit(data: dict) -> None:
        target = data["model_params"]
        for key in section:
            target = target[key]
        target[wrong] = target.pop(right)

    with pytest.raises(ConfigError) as info:
        load_config(_tiny_yaml(tiny_golden, tmp_path, edit))
    message = str(info.value)
    assert f".{wrong}' (did you mean '{right}'?)" in message
    assert "trained with" not in message


@pytest.mark.parametrize(
    ("dataset", "phrase"),
    [
        ("not a mapping", "'dataset_params' is 'not a mapping', expected a mapping"),
        ({"frame_shape": "big"}, "'dataset_params.frame_shape' is 'big', expected [HEIGHT"),
        ({"frame_shape": [64, 0, 3]}, "expected [HEIGHT, WIDTH, CHANNELS]"),
        ({"frame_shape": [64, 128, 3]}, "needs square frames"),
        ({"frame_shape": [1000, 1000, 3]}, "dataset_params.frame_shape 1000 is out of range"),
        ({"frame_shape": [100, 100, 3]}, "dataset_params.frame_shape 100 does not fit"),
    ],
)
def test_bad_dataset_params(tiny_golden, tmp_path, dataset, phrase) -> None:
    path = _tiny_yaml(tiny_golden, tmp_path, lambda data: data.update(dataset_params=dataset))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert phrase in str(info.value)


def test_dataset_frame_shape_sets_the_resolution(tiny_golden, tmp_path) -> None:
    path = _tiny_yaml(
        tiny_golden, tmp_path, lambda data: data.update(dataset_params={"frame_shape": [64, 64]})
    )
    assert load_config(path).resolution == 64
