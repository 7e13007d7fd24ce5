"""Marking every output frame as synthetic: the invisible watermark and the visible label.

:class:`FrameMarker` runs on the animated frame at model resolution, right after animation
and before any composition or upscaling, so files, recordings, the virtual camera and the
preview all carry the same marks. Content Credentials on files are :mod:`live.credentials`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.watermark import Watermarker

from .errors import SettingError
from .label_font import font_for, load

#: Longest --label accepted (it must fit in one line across the frame).
MAX_LABEL_CHARS = 40
#: Label text height as a fraction of the frame height: 19 px at 256, 54 px once the frame is
#: upscaled to a 720-pixel-high virtual camera, which stays legible after video-call
#: compression (callers often see the picture at 360p or less).
LABEL_HEIGHT = 0.075
#: Opacity of the dark box behind the label text.
LABEL_BOX_OPACITY = 0.6


@dataclass(frozen=True)
class MarkingOptions:
    """How output frames and files are marked as synthetic."""

    watermark: bool = True  # invisible watermark in every frame (--no-watermark turns it off)
    label: str | None = None  # visible text in the bottom-left corner; None: no label
    c2pa_cert: Path | None = None  # PEM certificate chain for Content Credentials; None: own
    c2pa_key: Path | None = None  # PEM private key matching c2pa_cert
    c2pa_signer_name: str | None = None  # name in the generated certificate; None: no one

    def __post_init__(self) -> None:
        if self.label is not None:
            text = self.label.strip()
            if not text or len(text) > MAX_LABEL_CHARS or not text.isprintable():
                raise SettingError(
                    f"--label {self.label!r} is not usable: expected 1 to {MAX_LABEL_CHARS} "
                    "printable characters on one line, e.g. --label 'AI-generated'."
                )
            font_for(text)  # SettingError now, not boxes in every frame
        name = self.c2pa_signer_name
        if name is not None and (not name.strip() or len(name) > 64 or not name.isprintable()):
            raise SettingError(
                f"--c2pa-signer-name {name!r} is not usable: expected 1 to 64 printable "
                "characters, e.g. --c2pa-signer-name 'Jane Doe'."
            )
        if name is not None and self.c2pa_cert is not None:
            raise SettingError(
                "--c2pa-signer-name names avatarcam's generated certificate; with --c2pa-cert "
                "the name is the one in your certificate. Pass one or the other."
            )
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise SettingError(
                "--c2pa-cert and --c2pa-key go together: pass both (a PEM certificate chain "
                "and its private key), or neither to use avatarcam's own signing key."
            )


class Label:
    """A line of text in a dark box, rendered once, blended into a frame's bottom-left corner."""

    def __init__(self, text: str, height: int, width: int):
        from PIL import Image, ImageDraw

        size = max(10, round(height * LABEL_HEIGHT))
        # runs of (text, font) that have every character (see live.label_font)
        self.runs = load(text, size)
        boxes = [font.getbbox(segment, anchor="ls") for segment, font in self.runs]
        top = min(box[1] for box in boxes)  # above the baseline: negative
        bottom = max(box[3] for box in boxes)
        advances = [font.getlength(segment) for segment, font in self.runs]
        left = min(0, boxes[0][0])
        pad = max(2, size // 4)
        box_w = min(width, round(sum(advances[:-1]) + boxes[-1][2]) - left + 2 * pad)
        box_h = min(height, bottom - top + 2 * pad)
        alpha = Image.new("L", (box_w, box_h), round(255 * LABEL_BOX_OPACITY))
        color = Image.new("L", (box_w, box_h), 0)
        x = pad - left
        for (segment, font), advance in zip(self.runs, advances, strict=True):
            for layer in (alpha, color):
                ImageDraw.Draw(layer).text(
                    (x, pad - top), segment, font=font, fill=255, anchor="ls"
                )
            x += advance
        margin = max(2, round(height * 0.03))
        self.y = max(0, height - margin - box_h)  # top-left corner of the box in the frame
        self.x = min(margin, width - box_w)
        opacity = np.asarray(alpha, np.float32)[..., None] / 255  # h x w x 1
        self._keep = 1.0 - opacity  # share of the frame kept under the box
        self._add = np.asarray(color, np.float32)[..., None] * opacity  # premultiplied text
        self._scratch = np.empty((box_h, box_w, 3), np.float32)

    def draw(self, image: np.ndarray) -> None:
        """Blend the label into ``image`` (H x W x 3 uint8) in place."""
        h, w = self._scratch.shape[:2]
        region = image[self.y : self.y + h, self.x : self.x + w]
        np.multiply(region, self._keep, out=self._scratch)
        self._scratch += self._add
        np.rint(self._scratch, out=self._scratch)
        region[...] = self._scratch


class FrameMarker:
    """Watermark and label for frames of one size, into a buffer it owns (the input, which
    may be the animator's avatar-at-rest image, is never changed).

    ``engine_marks`` is True when the engine's frames already carry the watermark (an engine
    whose ``marks_frames`` attribute is True, e.g. a server that marks what it returns): the
    pattern is additive, so it is not embedded twice in those; frames made here (the avatar at
    rest, shown while paused, without a face or with the engine down) still get it.
    """

    def __init__(self, options: MarkingOptions, resolution: int, engine_marks: bool = False):
        self.options = options
        self.engine_marks = engine_marks
        self._watermarker = Watermarker(resolution) if options.watermark else None
        self._label = Label(options.label, resolution, resolution) if options.label else None
        self._out = np.empty((resolution, resolution, 3), np.uint8)

    @property
    def active(self) -> bool:
        """True when frames are changed at all."""
        return self._watermarker is not None or self._label is not None

    def __call__(self, image: np.ndarray, from_engine: bool = True) -> np.ndarray:
        """The marked frame (a buffer reused on the next call); ``from_engine``: the engine
        made ``image`` (False for the avatar at rest)."""
        if self._watermarker is not None and not (self.engine_marks and from_engine):
            self._watermarker.embed(image, self._out)
        else:
            self._out[...] = image
        if self._label is not None:
            self._label.draw(self._out)
        return self._out
