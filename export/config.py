"""Model configuration: built-in presets and the original FOMM YAML files.

Only ``model_params`` of a FOMM YAML matters; every other section (datasets, training,
visualisation) is ignored. All public checkpoints share one architecture, so the built-in
``vox-256`` preset lets users run without any YAML at all.
"""

from __future__ import annotations

import difflib
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


#: Keys of the FOMM YAML sections that this project reads, beyond the dataclass fields.
_SECTION_KEYS = {
    "model_params": ("common_params", "kp_detector_params", "generator_params"),
}
#: Sections of ``model_params`` that are valid but only used for training.
_TRAINING_SECTIONS = ("discriminator_params",)
_NOT_YAML_KEYS = ("name", "resolution", "kp_detector", "generator", "dense_motion")


def _unknown_keys(section: dict[str, Any], valid: list[str], path: str) -> list[str]:
    """One line per key of ``section`` that is not in ``valid``, with the closest valid key."""
    lines = []
    for key in section:
        if key in valid:
            continue
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"
        lines.append(f"'{path}.{key}'{hint}")
    return lines


def _check_keys(params: dict[str, Any], name: str) -> None:
    """Unknown keys are errors naming the closest valid key: a misspelled key would otherwise
    be ignored and its default used silently."""

    def fields(cls: type, extra: tuple[str, ...] = ()) -> list[str]:
        keys = [k for k in cls.__dataclass_fields__ if k not in _NOT_YAML_KEYS]
        return keys + list(extra)

    problems = _unknown_keys(
        params, [*_SECTION_KEYS["model_params"], *_TRAINING_SECTIONS], "model_params"
    )
    sections = (
        ("common_params", fields(ModelConfig)),
        ("kp_detector_params", fields(KeypointDetectorConfig)),
        ("generator_params", fields(GeneratorConfig, ("dense_motion_params",))),
    )
    for key, valid in sections:
        if isinstance(params.get(key), dict):
            problems += _unknown_keys(params[key], valid, f"model_params.{key}")
    generator = params.get("generator_params")
    dense = generator.get("dense_motion_params") if isinstance(generator, dict) else None
    if isinstance(dense, dict):
        problems += _unknown_keys(
            dense, fields(DenseMotionConfig), "model_params.generator_params.dense_motion_params"
        )
    if problems:
        raise ConfigError(
            f"{name}: unknown config keys: " + "; ".join(problems) + ".\nFix the spelling (a "
            "misspelled key would silently fall back to its default), or compare with the "
            "YAML files in the first-order-model repository's config/ folder."
        )


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
    _check_keys(params, name)
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


def validate_resolution(config: ModelConfig, resolution: int, what: str = "--resolution") -> None:
    """Check that ``resolution`` is usable with ``config``'s down-sampling depth; ``what``
    names where the value came from in messages."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ConfigError(
            f"{what} {resolution} is out of range: expected {MIN_RESOLUTION} to "
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
            f"{what} {resolution} does not fit this model: it must be a multiple of "
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
        config = config_from_document(data, path.name, resolution)
    if resolution is not None:
        validate_resolution(config, resolution)
        config = replace(config, resolution=resolution)
    return config


def config_from_document(data: Any, name: str, resolution: int | None = None) -> ModelConfig:
    """A config from a parsed FOMM YAML document named ``name``, at the frame size of its
    ``dataset_params`` (checked unless ``resolution`` overrides it: the caller applies that)."""
    size, size_key = _dataset_resolution(data, name)
    config = config_from_dict(data, name=name, resolution=size)
    if size_key and resolution is None:
        validate_resolution(config, size, f"{name}: {size_key}")
    return config


def _dataset_resolution(data: Any, name: str) -> tuple[int, str | None]:
    """The frame size a FOMM YAML was trained at (``dataset_params.frame_shape``, or
    ``image_shape`` in mgif-256.yaml), and the key it came from; 256 when not given."""
    if not isinstance(data, dict) or data.get("dataset_params") is None:
        return 256, None
    dataset = data["dataset_params"]
    if not isinstance(dataset, dict):
        raise ConfigError(
            f"{name}: 'dataset_params' is {dataset!r}, expected a mapping such as "
            "'dataset_params: {frame_shape: [256, 256, 3]}' (or leave it out: 256 is used)."
        )
    for key in ("frame_shape", "image_shape"):
        if dataset.get(key) is None:
            continue
        shape = dataset[key]
        where = f"dataset_params.{key}"
        sizes_ok = (
            isinstance(shape, (list, tuple))
            and len(shape) in (2, 3)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        )
        if not sizes_ok:
            raise ConfigError(
                f"{name}: '{where}' is {shape!r}, expected [HEIGHT, WIDTH, CHANNELS] in pixels, "
                "e.g. [256, 256, 3]."
            )
        if shape[0] != shape[1]:
            raise ConfigError(
                f"{name}: '{where}' is {list(shape)}: the model needs square frames, e.g. "
                "[256, 256, 3]."
            )
        return int(shape[0]), where
    return 256, None
