"""``avatarcam verify FILE...``: does this image or video carry avatarcam's public disclosure
mark?

For each file: whether the invisible watermark is present (the fraction of frames it was found
in and how sure that is) and the Content Credentials (C2PA) manifest, if any, with whether its
signer is trusted. Exit status 0 when every file carries the mark, 1 when one does not, 2 when
one cannot be read.

What a detection means: the file carries avatarcam's public disclosure mark. The key is public,
so anyone can add the mark to any image or remove it from a marked one; the false-positive
figure holds only for media nobody marked on purpose. It is not proof that avatarcam made it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines import watermark

from .images import IMAGE_EXTENSIONS, image_files

#: Frames tested per video at most, spread evenly over it.
MAX_FRAMES = 120
EXIT_MARKED, EXIT_UNMARKED, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Report:
    """What verify found in one file."""

    path: str  # the file
    frames: int  # frames tested
    marked_frames: int  # frames where the watermark was found
    median_z: float | None  # median detection score over the tested frames
    marked: bool  # the file carries the watermark
    false_positive: float  # bound on the chance of "marked" for an unmarked file
    version: int | None  # watermark format version found
    c2pa: dict | None  # {"state": ..., "manifest": ...} or None when there is none
    error: str | None = None  # why the file could not be read


def _frames(path: Path):
    """Yield the RGB frames to test (images: one; videos: up to MAX_FRAMES spread evenly)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("not a readable image")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        step = max(1, math.ceil(stream.frames / MAX_FRAMES)) if stream.frames else 1
        for index, frame in enumerate(container.decode(stream)):
            if index % step == 0:
                yield frame.to_ndarray(format="rgb24")


def verify_file(path: Path) -> Report:
    """Test one image or video file."""
    scores: list[float] = []
    versions: list[int] = []
    try:
        if path.is_dir():
            raise ValueError(f"a folder with no images in it ({', '.join(IMAGE_EXTENSIONS)})")
        if not path.is_file():
            raise ValueError("no such file")
        for frame in _frames(path):
            found = watermark.detect(frame)
            scores.append(found.z)
            if found.version is not None:
                versions.append(found.version)
        if not scores:
            raise ValueError("no frames")
    except Exception as exc:  # any decoder failure means: unreadable input
        return Report(str(path), 0, 0, None, False, 1.0, None, None, str(exc).strip())
    marked_frames = len(versions)
    # Marked when at least half the tested frames are: for an unmarked file the chance is at
    # most n * p / ceil(n / 2) <= 2p by Markov's inequality, however correlated its frames.
    needed = math.ceil(len(scores) / 2)
    bound = min(1.0, len(scores) * watermark.FRAME_FALSE_POSITIVE / needed)
    c2pa = _manifest(path)
    return Report(
        path=str(path),
        frames=len(scores),
        marked_frames=marked_frames,
        median_z=float(np.median(scores)),
        marked=marked_frames >= needed,
        false_positive=bound,
        version=max(set(versions), key=versions.count) if versions else None,
        c2pa=c2pa,
    )


def _manifest(path: Path) -> dict | None:
    from .credentials import CredentialsError, read_manifest

    try:
        return read_manifest(path)
    except CredentialsError as exc:
        return {"state": "unavailable", "error": str(exc)}


def _describe_c2pa(c2pa: dict | None) -> str:
    if c2pa is None:
        return "Content Credentials: none"
    if "manifest" not in c2pa:
        return f"Content Credentials: {c2pa['state']} ({c2pa.get('error', '')})"
    manifest = c2pa["manifest"]
    verdict = {
        "trusted": "valid signature, trusted signer",
        "untrusted": "valid signature, signer not trusted (self-issued certificate, or one from "
        "an authority this verifier does not trust: the names in it prove nothing)",
    }.get(
        c2pa.get("trust", ""),
        "invalid (" + ", ".join(c2pa.get("codes", {}).get("failure", [])) + ")",
    )
    parts = [f"Content Credentials: {verdict}"]
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                source = action.get("digitalSourceType", "").rsplit("/", 1)[-1]
                agent = action.get("softwareAgent", {})
                agent = agent.get("name", "") + " " + agent.get("version", "")
                parts.append(f"{action.get('action')} ({source or 'no source type'}) by {agent}")
    signature = manifest.get("signature_info", {})
    if signature:
        who = "signed by" if c2pa.get("trust") == "trusted" else "its certificate says"
        parts.append(
            f"{who} {signature.get('common_name', '?')!r} ({signature.get('issuer', '?')})"
        )
    return ", ".join(parts)


def describe(report: Report) -> str:
    """Two human-readable lines about one file."""
    if report.error is not None:
        return f"{report.path}: unreadable ({report.error})"
    share = f"{report.marked_frames}/{report.frames} frame{'s' if report.frames > 1 else ''}"
    if report.marked:
        head = (
            f"{report.path}: carries avatarcam's public disclosure mark (watermark "
            f"v{report.version}) in {share} (median z {report.median_z:.1f}; for media nobody "
            f"marked on purpose the chance of this is <= {report.false_positive:.0e}; anyone can "
            "add or remove this mark, so it does not prove who made the file)"
        )
    else:
        head = (
            f"{report.path}: no avatarcam disclosure mark ({share} over the threshold z >= "
            f"{watermark.THRESHOLD:g}; median z {report.median_z:.1f})"
        )
    return head + "\n  " + _describe_c2pa(report.c2pa)


def _expand(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        files.extend(image_files(path) or [path] if path.is_dir() else [path])
    return files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatarcam verify",
        description="Check images and videos for avatarcam's public disclosure mark (an "
        "invisible watermark anyone can add or remove) and Content Credentials. Exit status: 0 "
        "every file is marked, 1 one is not, 2 one is unreadable.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="images, videos, or folders of images")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    return parser


def main(argv: list[str]) -> int:
    """Run ``verify``; returns the exit status."""
    args = build_parser().parse_args(argv)
    reports = [verify_file(path) for path in _expand(args.files)]
    for report in reports:
        print(json.dumps(asdict(report)) if args.json else describe(report))
    if any(r.error is not None for r in reports):
        return EXIT_UNREADABLE
    return EXIT_MARKED if all(r.marked for r in reports) else EXIT_UNMARKED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
