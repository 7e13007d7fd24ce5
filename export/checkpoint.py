"""Loading FOMM checkpoints safely, with messages a user can act on.

A checkpoint is a pickle, and a pickle from the internet may run code when unpickled: it is
only ever read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
plain containers.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .config import PRESETS, ModelConfig
from .errors import CheckpointError
from .model import FOMM

#: The names a checkpoint is looked for under when no --checkpoint is given.
DEFAULT_CHECKPOINT_NAMES = ("vox-adv-cpk.pth.tar", "vox-cpk.pth.tar")

WHERE_TO_GET = (
    "Run again with --download to fetch the official vox-adv-cpk.pth.tar (751 MB, verified by "
    "its sha256), or --checkpoint NAME for another one of the catalog: vox-256 "
    "(vox-cpk.pth.tar), vox-adv-256-avatarify (avatarify's 228 MB vox-adv-cpk.pth.tar, md5 "
    "8a45a24037871c045fbb8a6a8aa95ebc); the README lists sizes, checksums and mirrors. Or put "
    "a checkpoint in {default_dir} (found automatically) or pass --checkpoint PATH."
)


def default_checkpoint_dir() -> Path:
    """Where checkpoints are looked for by default: $AVATARCAM_HOME/checkpoints or
    ~/.cache/avatarcam/checkpoints."""
    home = os.environ.get("AVATARCAM_HOME")
    base = Path(home) if home else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "avatarcam"
    return base.expanduser() / "checkpoints"


def where_to_get() -> str:
    return WHERE_TO_GET.format(default_dir=default_checkpoint_dir())


def find_default_checkpoint() -> Path:
    """The first default checkpoint that exists, in ./checkpoints or the default folder."""
    folders = (Path("checkpoints"), default_checkpoint_dir())
    for folder in folders:
        for name in DEFAULT_CHECKPOINT_NAMES:
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(f / DEFAULT_CHECKPOINT_NAMES[0]) for f in folders)
    raise CheckpointError(
        f"No checkpoint given and none found (looked for {looked}).\n" + where_to_get()
    )


# torch.save's legacy (non-zip) format starts with this pickled magic number (an 80-bit
# LONG1 opcode), whatever the pickle protocol; the official FOMM checkpoints use that format.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _sniff(path: Path) -> None:
    """Reject files that are plainly not checkpoints before unpickling anything."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(
            f"Checkpoint {path} is empty (0 bytes): the download did not complete.\n"
            + where_to_get()
        )
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<")):
        raise CheckpointError(
            f"Checkpoint {path} is a web page (HTML), not a PyTorch checkpoint: a download link "
            "saved its landing or error page (Google Drive does this for large files). "
            "Download the file itself again and check its size.\n" + where_to_get()
        )
    is_zip = head.startswith(b"PK\x03\x04")
    is_legacy_pickle = _LEGACY_MAGIC in head[:32] and head[:1] == b"\x80"
    if not (is_zip or is_legacy_pickle):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with bytes {head[:8]!r}; expected a "
            "file written by torch.save, such as vox-adv-cpk.pth.tar).\n" + where_to_get()
        )


def read_checkpoint_file(path: str | Path) -> dict:
    """The checkpoint's top-level dict, read safely on the CPU (nothing in it is executed)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist.\n" + where_to_get())
    if path.is_dir():
        raise CheckpointError(
            f"Checkpoint {path} is a folder; pass the .pth.tar file inside it.\n" + where_to_get()
        )
    try:
        _sniff(path)
        data = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"Refused to load {path}: it holds Python objects other than tensors, which "
                "could run code when unpickled, so it was not opened. The official FOMM "
                "checkpoints hold only tensors; download the file again from the official "
                "links.\n" + where_to_get()
            ) from None
        raise CheckpointError(
            f"Checkpoint {path} is corrupt ({exc}). Download it again and compare its size "
            "and checksum.\n" + where_to_get()
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint {path} could not be read ({reason}). The file is probably truncated or "
            "corrupt: download it again and compare its size and checksum.\n" + where_to_get()
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(data).__name__}, expected a dict with "
            "'generator' and 'kp_detector' state dicts (a FOMM checkpoint)."
        )
    return data


def checkpoint_states(data: dict, path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The ``generator`` and ``kp_detector`` state dicts of a checkpoint's top-level dict,
    without a ``module.`` prefix (DataParallel); every floating-point value must be finite."""
    missing = [key for key in ("generator", "kp_detector") if key not in data]
    if missing:
        found = ", ".join(sorted(map(str, data))[:8]) or "nothing"
        raise CheckpointError(
            f"Checkpoint {path} has no {' or '.join(repr(m) for m in missing)} entry (found: "
            f"{found}). Expected a FOMM checkpoint such as vox-adv-cpk.pth.tar, with "
            "'generator' and 'kp_detector' state dicts."
        )
    states = {}
    for part in ("generator", "kp_detector"):
        state = data[part]
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise CheckpointError(f"Checkpoint {path}: '{part}' is not a state dict of tensors.")
        states[part] = {k.removeprefix("module."): v for k, v in state.items()}
    _check_finite(states, path)
    return states


def _check_finite(states: dict[str, dict[str, torch.Tensor]], path: str | Path) -> None:
    """Refuse weights with NaN or infinity: they give black or garbage frames, not an error."""
    bad = []
    for part, state in states.items():
        for key, value in state.items():
            # A sum is NaN or infinite when any value is, and costs no allocation (a tenth of
            # torch.isfinite's time); only then are the values counted (an overflowing sum of
            # finite values counts none).
            if not value.is_floating_point() or bool(torch.isfinite(value.sum())):
                continue
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{part}.{key} ({count} of {value.numel()} values)")
    if bad:
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise CheckpointError(
            f"Checkpoint {path} holds weights that are not finite numbers (NaN or infinity) in "
            f"{', '.join(bad[:3])}{more}. A network with such weights draws black or garbage "
            "frames. The file is damaged, or the training that wrote it diverged: download it "
            "again (compare its size and checksum) or use an earlier checkpoint of that "
            "training.\n" + where_to_get()
        )


def read_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``generator`` and ``kp_detector`` state dicts from a checkpoint file, on the CPU.

    A ``module.`` key prefix (DataParallel) is removed; non-finite weights are refused.
    Nothing in the file is executed.
    """
    return checkpoint_states(read_checkpoint_file(path), Path(path).expanduser())


def _expected_shapes(config: ModelConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = FOMM(config)
    return {
        "generator": {k: tuple(v.shape) for k, v in model.generator.state_dict().items()},
        "kp_detector": {k: tuple(v.shape) for k, v in model.kp_detector.state_dict().items()},
    }


def _mismatches(states: dict[str, dict[str, torch.Tensor]], config: ModelConfig) -> list[str]:
    expected = _expected_shapes(config)
    problems = []
    for part, shapes in expected.items():
        have = states[part]
        for key, shape in shapes.items():
            if key not in have:
                problems.append(f"{part}.{key}: missing (expected {list(shape)})")
            elif tuple(have[key].shape) != shape:
                problems.append(
                    f"{part}.{key}: checkpoint has {list(have[key].shape)}, config expects "
                    f"{list(shape)}"
                )
        for key in have:
            if key not in shapes:
                problems.append(f"{part}.{key}: unexpected key {list(have[key].shape)}")
    return problems


#: Endings of checkpoint file names, removed to find the YAML config of the same name.
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


def checkpoint_stem(checkpoint: str | Path) -> str:
    """The checkpoint's file name without its ending: ``model.pth.tar`` -> ``model``."""
    name = Path(checkpoint).name
    return next(
        (name[: -len(s)] for s in CHECKPOINT_SUFFIXES if name.lower().endswith(s)),
        Path(checkpoint).stem,
    )


def check_fit(
    states: dict[str, dict[str, torch.Tensor]],
    checkpoint: str | Path,
    config: ModelConfig,
    where: str = "",
    candidates: dict[str, ModelConfig] | None = None,
) -> None:
    """Raise CheckpointError unless ``states`` fit ``config`` key for key and shape for shape.

    The message names the preset (or other ``candidates``, e.g. a YAML beside the checkpoint)
    that fits, when one does. ``where`` says where the config came from.
    """
    problems = _mismatches(states, config)
    if not problems:
        return
    shown = "\n  ".join(problems[:5])
    more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
    options = {**(candidates or {}), **PRESETS}
    fitting = [name for name, other in options.items() if not _mismatches(states, other)]
    hint = (
        f"This checkpoint fits the config '{fitting[0]}': pass --config {fitting[0]}."
        if fitting
        else "None of the built-in presets (" + ", ".join(PRESETS) + ") fits either: pass "
        "the YAML config the checkpoint was trained with (--config path/to/cfg.yaml), or put "
        f"it beside the checkpoint as {checkpoint_stem(checkpoint)}.yaml (found automatically)."
    )
    raise CheckpointError(
        f"Checkpoint {checkpoint} does not fit the config '{config.name}'{where} "
        f"({len(problems)} mismatched keys):\n  {shown}{more}\n{hint}"
    )


def load_model(
    checkpoint: str | Path,
    config: ModelConfig,
    device: torch.device | str = "cpu",
) -> FOMM:
    """Load a checkpoint into a network built from ``config`` (strict), in eval mode on
    ``device``."""
    states = read_checkpoint(checkpoint)
    check_fit(states, checkpoint, config)
    model = FOMM(config)
    model.generator.load_state_dict(states["generator"], strict=True)
    model.kp_detector.load_state_dict(states["kp_detector"], strict=True)
    return model.to(device)
