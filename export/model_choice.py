"""Which config a checkpoint runs with, checked against the checkpoint before any engine build.

With ``--config``: that preset or YAML file. Without it, the checkpoint's own config:

1. a YAML file beside the checkpoint with the same name (``model.pth.tar`` -> ``model.yaml``),
2. else the only YAML file in the checkpoint's folder,
3. else a config embedded in the checkpoint: a top-level ``config`` entry holding FOMM YAML
   text, or the mapping it parses to,
4. else the default preset (vox-256, the architecture of every public checkpoint).

The run says which. The checkpoint is then read once and checked against the config (every key
and shape, every weight finite), so that a wrong config or a damaged file is one message before
anything slow (an ONNX export, a backend race) starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import check_fit, checkpoint_states, checkpoint_stem, read_checkpoint_file
from .config import DEFAULT_PRESET, ModelConfig, config_from_document, load_config
from .errors import ConfigError, UserError

YAML_SUFFIXES = (".yaml", ".yml")
#: The top-level entry of a checkpoint that may hold its config.
EMBEDDED_KEY = "config"


@dataclass(frozen=True)
class CheckedModel:
    """A checkpoint and the config it was checked against."""

    checkpoint: Path  # the checkpoint file
    config: ModelConfig  # its config, at the run's resolution
    source: str  # where the config came from, in words (for the log)
    own: bool  # the config was found for the checkpoint (no --config given)


def config_beside(checkpoint: Path) -> Path | None:
    """The YAML file named like ``checkpoint`` in its folder, else the only YAML file there."""
    stem = checkpoint_stem(checkpoint)
    folder = checkpoint.parent
    for suffix in YAML_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    try:
        found = [p for p in folder.iterdir() if p.suffix.lower() in YAML_SUFFIXES and p.is_file()]
    except OSError:
        return None
    return found[0] if len(found) == 1 else None


def embedded_config(
    data: dict[Any, Any], checkpoint: Path, resolution: int | None
) -> ModelConfig | None:
    """The config stored in the checkpoint's ``config`` entry, if it has one."""
    value = data.get(EMBEDDED_KEY)
    if value is None:
        return None
    name = f"{checkpoint.name} (its embedded '{EMBEDDED_KEY}' entry)"
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{name} is not valid YAML ({exc}). Pass the config with --config "
                "path/to/cfg.yaml instead."
            ) from None
    return config_from_document(value, name, resolution)


def _at(config: ModelConfig, resolution: int | None) -> ModelConfig:
    if resolution is None:
        return config
    from dataclasses import replace

    from .config import validate_resolution

    validate_resolution(config, resolution)
    return replace(config, resolution=resolution)


def choose_model(
    checkpoint: str | Path, spec: str | Path | None, resolution: int | None = None
) -> CheckedModel:
    """The config for ``checkpoint`` (``spec``, or the checkpoint's own when None), checked
    against it; raises CheckpointError or ConfigError with one message that says what to do."""
    checkpoint = Path(checkpoint).expanduser()
    data = read_checkpoint_file(checkpoint)
    states = checkpoint_states(data, checkpoint)
    beside = config_beside(checkpoint)
    candidates: dict[str, ModelConfig] = {}
    if spec is not None:
        config = load_config(spec, resolution)
        source = f"--config {spec}"
        if beside is not None:  # named in the hint when it fits and --config does not
            with contextlib.suppress(UserError):  # a broken YAML there is not the question
                candidates[str(beside)] = load_config(beside, resolution)
    elif beside is not None:
        config = load_config(beside, resolution)
        source = f"{beside}, found beside the checkpoint"
    else:
        embedded = embedded_config(data, checkpoint, resolution)
        if embedded is not None:
            config = _at(embedded, resolution)
            source = f"embedded in {checkpoint.name}"
        else:
            config = load_config(DEFAULT_PRESET, resolution)
            source = (
                f"the default preset {DEFAULT_PRESET}: no --config given, and no YAML beside "
                "the checkpoint or in it"
            )
    check_fit(states, checkpoint, config, f" ({source})", candidates)
    return CheckedModel(checkpoint, config, source, own=spec is None)
