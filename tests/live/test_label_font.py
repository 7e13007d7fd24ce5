"""--label in any language: each character is written with a glyph of a font that has it (not
the missing-glyph box), right-to-left and CJK included, and text no font can write is refused
before the run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from live import label_font
from live.errors import SettingError
from live.marking import FrameMarker, Label, MarkingOptions

LABELS = {
    "latin-accents": "Généré par IA, über Größe",
    "cyrillic": "Сгенерировано ИИ",
    "arabic": "تم إنشاؤه بالذكاء الاصطناعي",
    "cjk": "人工智能生成",
    "latin-and-cjk": "AI 生成",
}
NOT_A_CHARACTER = "\U0010fffd"  # in no font: rendered as the font's missing-glyph box


def _label(text: str) -> Label:
    try:
        return Label(text, 256, 256)
    except SettingError as exc:  # the fonts come from the system (.ci/run installs them)
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"no font for this script here: {exc}")


@pytest.mark.parametrize("name", list(LABELS))
def test_every_character_has_a_real_glyph(name: str) -> None:
    text = LABELS[name]
    label = _label(text)
    assert "".join(segment for segment, _ in label.runs) == text
    for segment, font in label.runs:
        box = font.getmask(NOT_A_CHARACTER, mode="L")
        missing = (box.size, bytes(box))
        for char in label_font.needed(segment):
            glyph = font.getmask(char, mode="L")
            assert glyph.size[0] > 0 and (glyph.size, bytes(glyph)) != missing, (name, char)


@pytest.mark.parametrize("name", list(LABELS))
def test_the_label_is_drawn(name: str) -> None:
    _label(LABELS[name])
    frame = np.full((256, 256, 3), 128, np.uint8)
    marked = FrameMarker(MarkingOptions(watermark=False, label=LABELS[name]), 256)(frame)
    rows, cols = np.nonzero(np.any(marked != frame, axis=2))
    assert rows.min() > 256 * 0.75 and cols.min() < 256 * 0.1
    text_pixels = (marked.min(axis=2) >= 200).sum()
    assert text_pixels > 40 * len(label_font.needed(LABELS[name])) ** 0.5  # ink, not a box


def test_right_to_left_text_starts_on_the_right() -> None:
    label = _label("ب" + "-" * 6)  # the Arabic letter comes first, so it is drawn rightmost
    ((segment, font),) = label.runs
    ink = np.asarray(font.getmask(segment, mode="L")).reshape(font.getmask(segment).size[::-1])
    only_letter = np.asarray(font.getmask("ب", mode="L")).reshape(font.getmask("ب").size[::-1])
    columns = np.nonzero(ink.max(axis=0))[0]
    width = only_letter.shape[1]
    # the rightmost columns hold the letter (taller than the dashes), the left ones dashes
    right = ink[:, columns[-1] - width // 2 : columns[-1] + 1]
    left = ink[:, columns[0] : columns[0] + width // 2]
    assert np.count_nonzero(right.max(axis=1)) > np.count_nonzero(left.max(axis=1))


def test_text_no_font_has_is_refused_up_front(monkeypatch) -> None:
    only_latin = [f for f in label_font._fontconfig(frozenset("A")) if "DejaVuSans" in f[0].name]
    if not only_latin:
        pytest.skip("needs DejaVu Sans (apt install fonts-dejavu-core)")
    monkeypatch.setattr(label_font, "_fontconfig", lambda chars: only_latin)
    monkeypatch.setattr(label_font, "_folders", lambda: [])
    label_font.fonts_for.cache_clear()
    try:
        with pytest.raises(SettingError) as info:
            MarkingOptions(label="AI 生成")
        message = str(info.value)
        assert "U+751F" in message and "apt install fonts-noto" in message
        MarkingOptions(label="Généré par IA")  # DejaVu has these
    finally:
        label_font.fonts_for.cache_clear()
