"""What ordinary sharing does to the invisible watermark: shifts, a mirror, crops of 5-10 %
and JPEG at quality 30.

``python -m benchmarks.watermark_sharing`` marks 256x256 frames of the test photos and the
driving clip (../shared/media), applies each transformation in :data:`SHARING` and prints a
Markdown table of the detection score z of marked frames (smallest and median) and of the same
frames unmarked (largest), with the threshold. The README's robustness table is its output;
``tests/engines/test_watermark.py`` asserts the same cases.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from engines.watermark import FRAME_FALSE_POSITIVE, THRESHOLD, Watermarker, detect


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (RGB) encoded as JPEG at ``quality`` and decoded again."""
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Moved by (dy, dx) pixels; the uncovered border is black (not wrapped around)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_NEAREST)


def crop(image: np.ndarray, fraction: float, resize: bool) -> np.ndarray:
    """``fraction`` of the height and width cut off (at the top left), optionally scaled back
    to the frame size as a re-share would."""
    h, w = image.shape[:2]
    out = image[round(h * fraction) :, round(w * fraction) :]
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA) if resize else out


#: What sharing does to a frame, by name.
SHARING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "shift 2 px": lambda x: translate(x, 2, 2),
    "shift 20 px": lambda x: translate(x, -20, 20),
    "mirror": lambda x: x[:, ::-1],
    "crop 5%": lambda x: crop(x, 0.05, False),
    "crop 10%": lambda x: crop(x, 0.10, False),
    "crop 5%, resized back": lambda x: crop(x, 0.05, True),
    "crop 10%, resized back": lambda x: crop(x, 0.10, True),
    "JPEG q30": lambda x: jpeg(x, 30),
    "720p, crop 5%": lambda x: crop(cv2.resize(x, (720, 720)), 0.05, False),
    "mirror, crop 5% resized, JPEG q30": lambda x: jpeg(crop(x[:, ::-1], 0.05, True), 30),
}


def frames(shared: Path) -> list[np.ndarray]:
    """256x256 RGB frames: the avatar photos and every 10th frame of the driving clip."""
    import av

    def square(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)

    avatars = sorted((shared / "media" / "avatars").iterdir())
    out = [square(cv2.imread(str(p))[..., ::-1]) for p in avatars if p.suffix == ".jpg"]
    with av.open(str(shared / "media" / "driving" / "mona-talking.gif")) as container:
        clip = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return out + [square(f) for f in clip[::10]]


def table(images: list[np.ndarray]) -> str:
    marker = Watermarker()
    lines = [
        "| after | marked: min z | median z | found | unmarked: max z |",
        "|---|---|---|---|---|",
    ]
    for name, attack in SHARING.items():
        marked = [detect(attack(marker.embed(f))).z for f in images]
        plain = [detect(attack(f)).z for f in images]
        found = sum(z >= THRESHOLD for z in marked)
        lines.append(
            f"| {name} | {min(marked):.1f} | {np.median(marked):.1f} | {found}/{len(images)} "
            f"| {max(plain):.1f} |"
        )
    lines.append(
        f"\nThreshold z >= {THRESHOLD:g} (false-positive bound {FRAME_FALSE_POSITIVE:.0e} per "
        f"frame); {len(images)} frames."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watermark_sharing")
    default = Path(os.environ.get("AVATARCAM_SHARED", Path(__file__).parents[1] / ".." / "shared"))
    parser.add_argument("--shared", type=Path, default=default, help="the shared test data")
    args = parser.parse_args(argv)
    print(table(frames(args.shared)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
