"""Model configuration: built-in presets and the original FOMM YAML files.

Only ``model_params`` of a FOMM YAML matters; every other section (datasets, training,
visualisation) is ignored. All public checkpoints share one architecture, so the built-in
``vox-256`` preset lets users run without any YAML at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

MIN_RESOLUTION = 64
MAX_RESOLUTION = 512


@dataclass(frozen=True)
class KeypointDetectorConfig:
    """``kp_detector_params`` of a FOMM config."""

    temperature: float = 0.1  # softmax temperature of the keypoint heatmaps
    block_expansion: int = 32  # channels of the hourglass' first block
    max_features: int = 1024  # channel cap of the hourglass
    scale_factor: float = 0.25  # the detector runs on the image scaled by this factor
    num_blocks: int = 5  # down/up blocks of the hourglass
    single_jacobian_map: bool = False  # one jacobian map shared by all keypoints (mgif)
    pad: int = 0  # padding of the 7x7 keypoint and jacobian convolutions


@dataclass(frozen=True)
class DenseMotionConfig:
    """``generator_params.dense_motion_params`` of a FOMM config."""

    block_expansion: int = 64  # channels of the hourglass' first block
    max_features: int = 1024  # channel cap of the hourglass
    num_blocks: int = 5  # down/up blocks of the hourglass
    scale_factor: float = 0.25  # dense motion is estimated on the source scaled by this factor
    kp_variance: float = 0.01  # variance of the keypoint gaussians


@dataclass(frozen=True)
class GeneratorConfig:
    """``generator_params`` of a FOMM config."""

    block_expansion: int = 64  # channels after the first block
    max_features: int = 512  # channel cap of the encoder/decoder
    num_down_blocks: int = 2  # encoder down blocks (and decoder up blocks)
    num_bottleneck_blocks: int = 6  # residual blocks between encoder and decoder
    estimate_occlusion_map: bool = True  # predict an occlusion map that masks warped features
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)  # motion network


@dataclass(frozen=True)
class ModelConfig:
    """``model_params`` of a FOMM config: everything that fixes the network's shapes."""

    name: str = "vox-256"  # preset name or the YAML file it came from
    num_kp: int = 10  # number of keypoints
    num_channels: int = 3  # image channels
    estimate_jacobian: bool = True  # keypoints carry a 2x2 jacobian
    kp_detector: KeypointDetectorConfig = field(default_factory=KeypointDetectorConfig)  # detector
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # generator
    resolution: int = 256  # the square frame size the model was trained at

    @property
    def num_jacobian_maps(self) -> int:
        """Jacobian maps the detector predicts (0 without jacobians)."""
        if not self.estimate_jacobian:
            return 0
        return 1 if self.kp_detector.single_jacobian_map else self.num_kp


_VOX = ModelConfig()

#: Built-in presets. All public checkpoints share the vox architecture; mgif alone uses one
#: jacobian map for all keypoints.
PRESETS: dict[str, ModelConfig] = {
    "vox-256": _VOX,
    "vox-adv-256": replace(_VOX, name="vox-adv-256"),
    "taichi-256": replace(_VOX, name="taichi-256"),
    "taichi-adv-256": replace(_VOX, name="taichi-adv-256"),
    "nemo-256": replace(_VOX, name="nemo-256"),
    "bair-256": replace(_VOX, name="bair-256"),
    "fashion-256": replace(_VOX, name="fashion-256"),
    "mgif-256": replace(
        _VOX,
        name="mgif-256",
        kp_detector=replace(_VOX.kp_detector, single_jacobian_map=True),
    ),
}

DEFAULT_PRESET = "vox-256"


def _section(params: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = params.get(key)
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: 'model_params.{key}' is missing or not a mapping.\n"
            "Expected a FOMM config with common_params, kp_detector_params and generator_params "
            "(see the YAML files in the first-order-model repository's config/ folder)."
        )
    return value


def _pick(section: dict[str, Any], cls: type, where: str, path: str) -> dict[str, Any]:
    names = set(cls.__dataclass_fields__)
    picked = {k: v for k, v in section.items() if k in names}
    for key, value in picked.items():
        expected = type(getattr(cls(), key))
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected is bool:
            ok = isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(
                f"{where}: '{path}.{key}' is {value!r}, expected a {expected.__name__}."
            )
    return picked


def config_from_dict(data: Any, name: str = "config", resolution: int = 256) -> ModelConfig:
    """Build a :class:`ModelConfig` from a parsed FOMM YAML document."""
    if not isinstance(data, dict) or not isinstance(data.get("model_params"), dict):
        raise ConfigError(
            f"{name}: no 'model_params' section.\n"
            "Expected an original FOMM config YAML (e.g. config/vox-256.yaml of the "
            "first-order-model repository), or a preset name: " + ", ".join(PRESETS)
        )
    params = data["model_params"]
    common = _section(params, "common_params", name)
    kp_params = _section(params, "kp_detector_params", name)
    gen_params = dict(_section(params, "generator_params", name))
    dm_params = gen_params.pop("dense_motion_params", None)
    if not isinstance(dm_params, dict):
        raise ConfigError(
            f"{name}: 'model_params.generator_params.dense_motion_params' is missing; "
            "this project supports the occlusion-aware generator with dense motion, the "
            "architecture of every public FOMM checkpoint."
        )
    fields = _pick(common, ModelConfig, name, "common_params")
    fields.pop("name", None)
    fields.pop("resolution", None)
    config = ModelConfig(
        name=name,
        kp_detector=KeypointDetectorConfig(
            **_pick(kp_params, KeypointDetectorConfig, name, "kp_detector_params")
        ),
        generator=GeneratorConfig(
            dense_motion=DenseMotionConfig(
                **_pick(dm_params, DenseMotionConfig, name, "dense_motion_params")
            ),
            **_pick(gen_params, GeneratorConfig, name, "generator_params"),
        ),
        resolution=resolution,
        **fields,
    )
    validate_config(config)
    return config


def validate_config(config: ModelConfig) -> None:
    """Reject configs whose shapes cannot work, with a message naming the field."""
    problems = []
    if config.num_kp < 1:
        problems.append(f"num_kp must be at least 1, got {config.num_kp}")
    if config.num_channels < 1:
        problems.append(f"num_channels must be at least 1, got {config.num_channels}")
    for label, scale in (
        ("kp_detector_params.scale_factor", config.kp_detector.scale_factor),
        ("dense_motion_params.scale_factor", config.generator.dense_motion.scale_factor),
    ):
        if not 0 < scale <= 1:
            problems.append(f"{label} must be in (0, 1], got {scale}")
    if config.kp_detector.temperature <= 0:
        problems.append("kp_detector_params.temperature must be positive")
    if config.generator.dense_motion.kp_variance <= 0:
        problems.append("dense_motion_params.kp_variance must be positive")
    if problems:
        raise ConfigError(f"{config.name}: invalid config: " + "; ".join(problems) + ".")


def validate_resolution(config: ModelConfig, resolution: int) -> None:
    """Check that ``resolution`` is usable with ``config``'s down-sampling depth."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ConfigError(
            f"--resolution {resolution} is out of range: expected {MIN_RESOLUTION} to "
            f"{MAX_RESOLUTION} pixels (the public checkpoints were trained at 256)."
        )
    kp = config.kp_detector
    dm = config.generator.dense_motion
    factors = (
        (1 / kp.scale_factor) * 2**kp.num_blocks,
        (1 / dm.scale_factor) * 2**dm.num_blocks,
        2**config.generator.num_down_blocks,
    )
    step = int(max(round(f) for f in factors))
    if resolution % step:
        raise ConfigError(
            f"--resolution {resolution} does not fit this model: it must be a multiple of "
            f"{step} (the networks halve the frame that many times). Try "
            f"{max(step, resolution // step * step)}."
        )


def load_config(spec: str | Path | None = None, resolution: int | None = None) -> ModelConfig:
    """Load a preset by name (default ``vox-256``) or an original FOMM YAML file.

    ``resolution`` overrides the frame size (default 256, or the config's own).
    """
    if spec is None:
        spec = DEFAULT_PRESET
    text_spec = str(spec)
    if text_spec in PRESETS:
        config = PRESETS[text_spec]
    else:
        path = Path(text_spec).expanduser()
        if not path.suffix and not path.exists():
            raise ConfigError(
                f"Unknown config '{text_spec}'. Expected a preset ({', '.join(PRESETS)}) "
                "or the path of a FOMM YAML file, e.g. --config config/vox-256.yaml."
            )
        if not path.is_file():
            raise ConfigError(
                f"Config file {path} does not exist. Pass a FOMM YAML file or a preset name "
                f"({', '.join(PRESETS)}); the default is {DEFAULT_PRESET}."
            )
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"Config file {path} could not be read as YAML ({exc}). Expected an original "
                "FOMM config such as config/vox-256.yaml."
            ) from exc
        size = 256
        if isinstance(data, dict):
            frame_shape = (data.get("dataset_params") or {}).get("frame_shape")
            if isinstance(frame_shape, (list, tuple)) and frame_shape:
                size = int(frame_shape[0])
        config = config_from_dict(data, name=path.name, resolution=size)
    if resolution is not None:
        validate_resolution(config, resolution)
        config = replace(config, resolution=resolution)
    return config
