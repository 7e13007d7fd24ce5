"""Finding the checkpoint a run needs, and downloading it when it is missing.

Order: ``--checkpoint-url`` (with its sha256), then ``--checkpoint`` (a file, or a catalog name
such as ``vox-adv-256``), then a known checkpoint already in ``./checkpoints`` or
``<home>/checkpoints``. When none is found: on a terminal the user is asked once (name, size,
licence, destination); ``--download`` downloads without asking; otherwise the manual steps are
printed and the run stops (exit status 2).
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .catalog import (
    CATALOG_ENV,
    CatalogEntry,
    catalog_names,
    default_entry,
    find_entry,
    load_catalog,
    mirror_urls,
)
from .checkpoint import DEFAULT_CHECKPOINT_NAMES, default_checkpoint_dir
from .config import DEFAULT_PRESET
from .download import DownloadError, Expected, download
from .errors import CheckpointError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_BY_HAND = "To do it by hand:"  # how export.download's messages give their manual step


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint and config a run uses."""

    checkpoint: Path  # the checkpoint file (it may not exist: loading then explains)
    config: str  # preset name or YAML path
    entry: CatalogEntry | None = None  # the catalog entry it came from, if any
    downloaded: bool = False  # fetched by this run


def _folders() -> tuple[Path, ...]:
    return (Path("checkpoints"), default_checkpoint_dir())


def _find_local(catalog: tuple[CatalogEntry, ...]) -> tuple[Path, CatalogEntry | None] | None:
    names = [entry.file for entry in catalog] + list(DEFAULT_CHECKPOINT_NAMES)
    for folder in _folders():
        for name in dict.fromkeys(names):
            path = folder / name
            if path.is_file():
                entry = next((e for e in catalog if e.file == name), None)
                return path, entry
    return None


def _entry_config(entry: CatalogEntry, folder: Path) -> str:
    if entry.config_is_file:
        return str(folder / Path(urllib.parse.urlsplit(entry.config).path).name)
    return entry.config


def manual_steps(entry: CatalogEntry) -> str:
    """How to get ``entry`` without this tool."""
    folder = default_checkpoint_dir()
    digest = f"sha256 {entry.sha256}" if entry.sha256 else f"md5 {entry.md5}"
    urls = "\n".join(f"    {url}" for url in mirror_urls(entry))
    return (
        f"To get it by hand, download {entry.file} ({entry.describe_size()}, {digest}) from one "
        f"of:\n{urls}\n  and put it in {folder}/ (found automatically) or pass --checkpoint "
        "PATH."
    )


def _describe(entry: CatalogEntry, dest: Path) -> str:
    note = f": {entry.note}" if entry.note else ""
    return (
        f"checkpoint {entry.name} ({entry.file}, {entry.describe_size()}){note}\n"
        f"  licence: {entry.licence}\n  saved to: {dest}"
    )


def fetch_entry(entry: CatalogEntry, stream: TextIO | None = None) -> Path:
    """Download ``entry`` (and its YAML config, if it names one) into the checkpoint folder."""
    stream = stream or sys.stderr
    folder = default_checkpoint_dir()
    dest = folder / entry.file
    stream.write(f"downloading {_describe(entry, dest)}\n")
    expected = Expected(size=entry.size, sha256=entry.sha256, md5=entry.md5)
    try:
        download(mirror_urls(entry), dest, expected, label=entry.file, stream=stream)
        if entry.config_is_file:
            config = Path(_entry_config(entry, folder))
            download(
                mirror_urls(entry, entry.config),
                config,
                Expected(size=None, sha256=entry.config_sha256),
                label=config.name,
                stream=stream,
            )
    except DownloadError as exc:  # its own "by hand" line gives way to the entry's steps
        lines = [line for line in str(exc).splitlines() if not line.startswith(_BY_HAND)]
        raise DownloadError("\n".join([*lines, manual_steps(entry)])) from None
    stream.write(f"saved {dest}\n")
    return dest


def _from_url(url: str, sha256: str | None, config: str | None, stream: TextIO) -> Path:
    if not sha256 or not _HEX64.match(sha256):
        raise CheckpointError(
            "--checkpoint-url needs --checkpoint-sha256 HEX (the 64 hex digits of the file's "
            "sha256), so that a wrong or tampered download is never loaded. Get it from the "
            "place that publishes the file, or compute it with sha256sum."
        )
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise CheckpointError(f"--checkpoint-url {url}: expected an http:// or https:// URL.")
    name = Path(urllib.parse.unquote(parsed.path)).name or "checkpoint.pth.tar"
    dest = default_checkpoint_dir() / name
    expected = Expected(size=None, sha256=sha256.lower())
    if dest.is_file():
        from .download import _digests

        if _digests(dest)[0] == expected.sha256:
            return dest
        stream.write(f"{dest} exists but does not match --checkpoint-sha256: downloading again\n")
    stream.write(f"downloading {url}\n  saved to: {dest}\n")
    download([url], dest, expected, label=name, stream=stream)
    return dest


def obtain_checkpoint(
    checkpoint: Path | None,
    config: str | None,
    *,
    download: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    interactive: bool | None = None,
    ask: Callable[[str], str] = input,
    stream: TextIO | None = None,
) -> CheckpointChoice:
    """Find (or download) the checkpoint; ``config`` None means the checkpoint's own config.

    ``interactive`` None means: ask when stdin and stderr are terminals.
    """
    stream = stream or sys.stderr
    if url is not None:
        path = _from_url(url, sha256, config, stream)
        return CheckpointChoice(path, config or DEFAULT_PRESET, downloaded=True)
    if sha256 is not None:
        raise CheckpointError(
            "--checkpoint-sha256 goes with --checkpoint-url URL (it checks that download)."
        )
    if checkpoint is not None and (
        checkpoint.exists() or str(checkpoint).endswith((".tar", ".pth", ".pt"))
    ):
        return CheckpointChoice(checkpoint, config or DEFAULT_PRESET)  # no catalog needed
    catalog = load_catalog()
    if checkpoint is not None:
        entry = find_entry(str(checkpoint), catalog)
        if entry is None:
            return CheckpointChoice(checkpoint, config or DEFAULT_PRESET)  # loading explains
        dest = default_checkpoint_dir() / entry.file
        if not dest.is_file():
            _confirm(entry, dest, download, interactive, ask, stream, asked_for=True)
            fetch_entry(entry, stream)
        return CheckpointChoice(dest, config or _entry_config(entry, dest.parent), entry)
    found = _find_local(catalog)
    if found is not None:
        path, entry = found
        chosen = config or (_entry_config(entry, path.parent) if entry else DEFAULT_PRESET)
        return CheckpointChoice(path, chosen, entry)
    entry = default_entry(config, catalog)
    dest = default_checkpoint_dir() / entry.file
    _confirm(entry, dest, download, interactive, ask, stream, asked_for=False)
    fetch_entry(entry, stream)
    return CheckpointChoice(dest, config or _entry_config(entry, dest.parent), entry, True)


def _confirm(
    entry: CatalogEntry,
    dest: Path,
    download: bool,
    interactive: bool | None,
    ask: Callable[[str], str],
    stream: TextIO,
    asked_for: bool,
) -> None:
    """Return when the download may go ahead; raise CheckpointError otherwise."""
    if download:
        return
    if interactive is None:
        interactive = sys.stdin.isatty() and stream.isatty()
    where = " (from $" + CATALOG_ENV + ")" if entry.base else ""
    lead = (
        f"The checkpoint {entry.name} is not downloaded yet."
        if asked_for
        else "No checkpoint given (--checkpoint) and none found in "
        + " or ".join(str(f) for f in _folders())
        + "."
    )
    if interactive:
        stream.write(f"{lead}\nDownload {_describe(entry, dest)}{where}\n")
        stream.flush()
        try:
            answer = ask("Download it now? [Y/n] ").strip().lower()
        except EOFError:
            answer = "n"
        if answer in ("", "y", "yes"):
            return
        raise CheckpointError(
            "Not downloaded. Run again with --download to fetch it without asking.\n"
            + manual_steps(entry)
        )
    others = ", ".join(n for n in catalog_names() if n != entry.name)
    choice = f"  (or another one: --checkpoint NAME, with NAME one of {others})\n" if others else ""
    raise CheckpointError(
        f"{lead}\nRun again with --download to fetch {_describe(entry, dest)}\n{choice}"
        + manual_steps(entry)
    )
