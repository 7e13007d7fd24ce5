"""Finding the checkpoint a run needs, and downloading it when it is missing.

Order: ``--checkpoint-url`` (with its sha256), then ``--checkpoint`` (a file, or a catalog name
such as ``vox-adv-256``), then a known checkpoint already in ``./checkpoints`` or
``<home>/checkpoints``. A file on disk counts as a catalog entry only when its size and hash
match it (see :mod:`export.local_files`), and the licence reported is that entry's; a file of
another content is never overwritten. When none is found: on a terminal the user is asked once
(name, size, licence, destination); ``--download`` downloads without asking; otherwise the
manual steps are printed and the run stops (exit status 2). ``--checkpoint-url`` files go to
their own folder (named by their sha256), never over a catalog file.
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
from .local_files import identify, is_entry, remember, sha256_of

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
    """The first known checkpoint file in the checkpoint folders, and the entry it is (by size
    and hash, not by name: an older version saved avatarify's file under the official name)."""
    names = [entry.file for entry in catalog] + list(DEFAULT_CHECKPOINT_NAMES)
    for folder in _folders():
        for name in dict.fromkeys(names):
            path = folder / name
            if not path.is_file():
                continue
            entry = identify(path, catalog)
            named = next((e for e in catalog if e.file == name), None)
            if entry is None and named is not None:
                raise CheckpointError(
                    f"{path} has the name of the catalog's {named.name} but is not that file "
                    f"({path.stat().st_size:,} bytes, expected {named.describe_size()}, or its "
                    "hash differs). Move it away to download the real one, or pass --checkpoint "
                    f"{path} to use it as your own checkpoint."
                )
            return path, entry
    return None


def _usable(entry: CatalogEntry, dest: Path) -> bool:
    """True when ``dest`` is ``entry``'s file; False when it is missing; CheckpointError when
    something else has its name (never overwritten)."""
    if not dest.is_file():
        return False
    if is_entry(dest, entry):
        return True
    raise CheckpointError(
        f"{dest} is not the file of the catalog's {entry.name} ({dest.stat().st_size:,} bytes, "
        f"expected {entry.describe_size()}, or its hash differs), and it is not overwritten. Move "
        f"it away and run again to download {entry.name}, or pass --checkpoint {dest} to use it "
        "as your own checkpoint."
    )


def _announce(path: Path, entry: CatalogEntry | None, stream: TextIO) -> None:
    """Say which checkpoint a run uses, and under which licence."""
    if entry is None:
        stream.write(f"checkpoint: {path} (not in the catalog: licence not known)\n")
    else:
        stream.write(f"checkpoint: {path} ({entry.name}; licence: {entry.licence})\n")


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
        remember(dest, entry.sha256, entry.md5)
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


URL_FOLDER = "from-url"  # --checkpoint-url files: <checkpoints>/from-url/<sha256[:16]>/NAME


def _from_url(url: str, sha256: str | None, config: str | None, stream: TextIO) -> Path:
    """Download ``url`` into a folder named by its sha256, so that it never replaces a catalog
    file (nor another URL's file of the same name)."""
    if not sha256 or not _HEX64.match(sha256):
        raise CheckpointError(
            "--checkpoint-url needs --checkpoint-sha256 HEX (the 64 hex digits of the file's "
            "sha256), so that a wrong or tampered download is never loaded. Get it from the "
            "place that publishes the file, or compute it with sha256sum."
        )
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise CheckpointError(f"--checkpoint-url {url}: expected an http:// or https:// URL.")
    sha256 = sha256.lower()
    name = Path(urllib.parse.unquote(parsed.path)).name or "checkpoint.pth.tar"
    dest = default_checkpoint_dir() / URL_FOLDER / sha256[:16] / name
    if dest.is_file():
        if sha256_of(dest) == sha256:
            return dest
        raise CheckpointError(
            f"{dest} exists but does not match --checkpoint-sha256, and it is not overwritten: "
            "move it away and run again."
        )
    stream.write(f"downloading {url}\n  saved to: {dest}\n")
    download([url], dest, Expected(size=None, sha256=sha256), label=name, stream=stream)
    remember(dest, sha256, None)
    return dest


def _not_in_catalog(name: Path, catalog: tuple[CatalogEntry, ...]) -> CheckpointError:
    names = ", ".join(catalog_names(catalog))
    where = f" (from ${CATALOG_ENV})" if any(e.base for e in catalog) else ""
    return CheckpointError(
        f"--checkpoint {name}: there is no such file, and {name} is not a name in the checkpoint "
        f"catalog{where}. The catalog has: {names}. Pass one of those names (with --download to "
        "fetch it), or the path of a checkpoint file."
    )


def obtain_checkpoint(
    checkpoint: Path | None,
    config: str | None,
    *,
    download: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    allow_insecure_catalog: bool = False,
    interactive: bool | None = None,
    ask: Callable[[str], str] = input,
    stream: TextIO | None = None,
) -> CheckpointChoice:
    """Find (or download) the checkpoint; ``config`` None means the checkpoint's own config.

    ``interactive`` None means: ask when stdin and stderr are terminals. The checkpoint used
    and its licence are written to ``stream``.
    """
    stream = stream or sys.stderr
    if url is not None:
        path = _from_url(url, sha256, config, stream)
        _announce(path, None, stream)
        return CheckpointChoice(path, config or DEFAULT_PRESET, downloaded=True)
    if sha256 is not None:
        raise CheckpointError(
            "--checkpoint-sha256 goes with --checkpoint-url URL (it checks that download)."
        )
    if checkpoint is not None and (
        checkpoint.exists() or str(checkpoint).endswith((".tar", ".pth", ".pt"))
    ):
        return CheckpointChoice(checkpoint, config or DEFAULT_PRESET)  # no catalog needed
    catalog = load_catalog(allow_insecure_catalog)
    if checkpoint is not None:
        entry = find_entry(str(checkpoint), catalog)
        if entry is None:
            raise _not_in_catalog(checkpoint, catalog)
        dest = default_checkpoint_dir() / entry.file
        downloaded = not _usable(entry, dest)
        if downloaded:
            _confirm(entry, dest, download, interactive, ask, stream, catalog, asked_for=True)
            fetch_entry(entry, stream)
        _announce(dest, entry, stream)
        chosen = config or _entry_config(entry, dest.parent)
        return CheckpointChoice(dest, chosen, entry, downloaded)
    found = _find_local(catalog)
    if found is not None:
        path, entry = found
        chosen = config or (_entry_config(entry, path.parent) if entry else DEFAULT_PRESET)
        _announce(path, entry, stream)
        return CheckpointChoice(path, chosen, entry)
    entry = default_entry(config, catalog)
    dest = default_checkpoint_dir() / entry.file
    _usable(entry, dest)  # refuses to overwrite a different file of that name
    _confirm(entry, dest, download, interactive, ask, stream, catalog, asked_for=False)
    fetch_entry(entry, stream)
    _announce(dest, entry, stream)
    return CheckpointChoice(dest, config or _entry_config(entry, dest.parent), entry, True)


def _confirm(
    entry: CatalogEntry,
    dest: Path,
    download: bool,
    interactive: bool | None,
    ask: Callable[[str], str],
    stream: TextIO,
    catalog: tuple[CatalogEntry, ...],
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
    others = ", ".join(n for n in catalog_names(catalog) if n != entry.name)
    choice = f"  (or another one: --checkpoint NAME, with NAME one of {others})\n" if others else ""
    raise CheckpointError(
        f"{lead}\nRun again with --download to fetch {_describe(entry, dest)}\n{choice}"
        + manual_steps(entry)
    )
