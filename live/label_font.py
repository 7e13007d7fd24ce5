"""A font that can write the user's ``--label``, in any language.

Pillow's built-in font covers ASCII only (``--label "Généré par IA"`` came out as boxes), so
the label font is looked up per text: fontconfig (``fc-list :charset=...``) lists the installed
fonts that cover every character, and the font's own character map (read with fontTools)
confirms it. Regular sans-serif faces are preferred. Right-to-left scripts and scripts that
need shaping (Arabic, Hebrew, Devanagari, ...) are laid out by Pillow's Raqm engine
(HarfBuzz + FriBiDi). Text no installed font covers, or that needs Raqm when Pillow lacks it,
is refused before the run starts, with the packages that would add the font.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import SettingError

#: Where fonts are looked for when fontconfig is not there (Windows, macOS without it).
FONT_DIRS = {
    "win32": (Path("C:/Windows/Fonts"),),
    "darwin": (Path("/System/Library/Fonts"), Path("/Library/Fonts")),
}
#: Bidirectional classes (and scripts) that need Raqm's layout rather than Pillow's basic one.
_COMPLEX_BIDI = {"R", "AL", "AN"}
#: Deadline for one fontconfig call, in seconds.
FC_TIMEOUT_S = 10.0
INSTALL_HINT = (
    "Install a font that has them (Debian/Ubuntu: apt install fonts-noto-core fonts-noto-cjk; "
    "macOS and Windows fonts are found in their font folders), or write the label in other "
    "characters."
)


@dataclass(frozen=True)
class LabelFont:
    """The font file chosen for a label."""

    path: Path | None  # font file; None: Pillow's built-in font (ASCII text, no font found)
    index: int  # face index inside a collection (.ttc); 0 otherwise
    complex_layout: bool  # the text needs Raqm (right-to-left or shaped scripts)


def needed(text: str) -> frozenset[str]:
    """The characters of ``text`` that need a glyph (not spaces or invisible format marks)."""
    return frozenset(c for c in text if not c.isspace() and unicodedata.category(c) != "Cf")


def _complex(text: str) -> bool:
    return any(
        unicodedata.bidirectional(c) in _COMPLEX_BIDI or unicodedata.category(c) in ("Mn", "Mc")
        for c in text
    )


def _covers(path: Path, index: int, chars: frozenset[str]) -> bool:
    """True when the font's character map has every one of ``chars``."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), fontNumber=index, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except (OSError, TTLibError, KeyError, ValueError, AssertionError):
        return False
    return all(ord(c) in cmap for c in chars)


def _rank(path: Path, style: str) -> tuple[int, int, str]:
    """Sort key: regular sans-serif faces first."""
    name = path.name.lower()
    plain = any(word in style.lower() for word in ("regular", "book", "normal", "medium"))
    odd = sum(word in name for word in ("mono", "bold", "italic", "oblique", "condensed", "light"))
    return (0 if plain else 1) + odd, 0 if "sans" in name else 1, name


def _fontconfig(chars: frozenset[str]) -> list[tuple[Path, int]]:
    """Installed fonts that cover ``chars`` according to fontconfig, best first."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    charset = " ".join(f"{ord(c):x}" for c in sorted(chars))
    try:
        listed = subprocess.run(
            [fc_list, "--format", "%{file}|%{index}|%{style}\\n", f":charset={charset}"],
            capture_output=True,
            text=True,
            timeout=FC_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in listed.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].isdigit():
            found.append((Path(parts[0]), int(parts[1]), parts[2]))
    found.sort(key=lambda item: _rank(item[0], item[2]))
    return [(path, index) for path, index, _ in found]


def _folders() -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for folder in FONT_DIRS.get(sys.platform, ()):
        if folder.is_dir():
            files += [
                (p, 0)
                for p in sorted(folder.rglob("*"))
                if p.suffix.lower() in (".ttf", ".otf", ".ttc")
            ]
    files.sort(
        key=lambda item: _rank(item[0], "regular" if "regular" in item[0].name.lower() else "")
    )
    return files


def _raqm() -> bool:
    from PIL import features

    return bool(features.check("raqm"))


def _first_covering(chars: frozenset[str]) -> LabelFont | None:
    for path, index in _fontconfig(chars) + _folders():
        if _covers(path, index, chars):
            return LabelFont(path, index, False)
    return None


@lru_cache(maxsize=32)
def fonts_for(text: str) -> tuple[tuple[str, LabelFont], ...]:
    """``text`` cut into runs, each with the font that writes it: one run when one font has
    every character, else (left-to-right text only) a run per font, e.g. Latin and CJK.
    SettingError when a character has no font at all."""
    chars = needed(text)
    complex_layout = _complex(text)
    if complex_layout and not _raqm():
        raise SettingError(
            f"--label {text!r} is written in a script that needs text shaping (right-to-left "
            "or joined letters), and this Pillow has no Raqm layout engine (libraqm, HarfBuzz, "
            "FriBiDi). Install libraqm (Debian/Ubuntu: apt install libraqm0), or use another "
            "label."
        )
    whole = _first_covering(chars)
    if whole is not None:
        return ((text, LabelFont(whole.path, whole.index, complex_layout)),)
    if all(" " <= c <= "~" for c in chars):
        return ((text, LabelFont(None, 0, False)),)  # no font found: Pillow's own writes ASCII
    per_char = {c: _first_covering(frozenset(c)) for c in chars}
    missing = sorted((c for c, font in per_char.items() if font is None), key=ord)
    if missing or complex_layout:
        if missing:
            names = ", ".join(f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, '?')})" for c in missing)
            problem = f"no installed font has {names}"
        else:
            problem = (
                "no single installed font has all of its characters, and right-to-left text "
                "cannot be split between fonts"
            )
        raise SettingError(f"--label {text!r} cannot be written: {problem}. {INSTALL_HINT}")
    runs: list[tuple[str, LabelFont]] = []
    for c in text:
        current = runs[-1][1] if runs else None
        font = per_char.get(c)
        if font is None or (
            current is not None and _covers(current.path, current.index, frozenset(c))
        ):
            font = current or font
        if font is None:  # leading spaces: the first font that comes
            font = next(per_char[x] for x in text if x in per_char)
        if runs and runs[-1][1] == font:
            runs[-1] = (runs[-1][0] + c, font)
        else:
            runs.append((c, font))
    return tuple(runs)


def font_for(text: str) -> LabelFont:
    """The font of ``text``'s first run (SettingError when it cannot be written)."""
    return fonts_for(text)[0][1]


def load(text: str, size: int) -> list[tuple[str, object]]:
    """``text`` as runs of (segment, Pillow font of ``size`` pixels) that write it."""
    from PIL import ImageFont

    layout = ImageFont.Layout.RAQM if _raqm() else ImageFont.Layout.BASIC
    out = []
    for segment, chosen in fonts_for(text):
        if chosen.path is None:
            font = ImageFont.load_default(size=size)
        else:
            font = ImageFont.truetype(
                str(chosen.path), size, index=chosen.index, layout_engine=layout
            )
        out.append((segment, font))
    return out
