"""The loop's actions the control page adds: a new avatar, and a new marker (another label)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from live.app import run
from live.cli import build_parser, options_from_args
from live.controls import Action
from live.loop import FrameRecord, LiveLoop
from live.marking import FrameMarker, MarkingOptions
from live.pipeline import PreparedAvatar
from tests.conftest import Golden


def _inputs(golden: Golden, tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    source = np.round(golden.arrays["source"] * 255).astype(np.uint8)
    cv2.imwrite(str(avatars / "golden.png"), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    driving = tmp_path / "driving"
    driving.mkdir()
    for i, frame in enumerate(golden.arrays["driving"]):
        rgb = np.round(frame * 255).astype(np.uint8)
        cv2.imwrite(str(driving / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return avatars, driving, source


def _run(golden: Golden, avatars: Path, driving: Path, output: Path, on_frame) -> LiveLoop:
    args = build_parser().parse_args(
        [
            *("--avatar", str(avatars), "--input", str(driving), "--output", str(output)),
            *("--checkpoint", str(golden.checkpoint), "--config", str(golden.config)),
            *("--resolution", str(golden.resolution), "--backend", "torch", "--no-crop"),
        ]
    )
    return run(options_from_args(args), on_frame=on_frame)


def test_added_avatar_can_be_selected_and_a_new_label_shows(
    tiny_golden: Golden, tmp_path: Path
) -> None:
    avatars, driving, source = _inputs(tiny_golden, tmp_path)
    flipped = np.ascontiguousarray(source[:, ::-1])
    records: list[FrameRecord] = []
    resolution = tiny_golden.resolution

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        records.append(record)
        if record.index == 2:
            loop.post(Action.ADD_AVATAR, PreparedAvatar("flipped.png", flipped, True))
            loop.post(Action.SELECT_AVATAR, 1)
            marker = FrameMarker(MarkingOptions(label="AI"), resolution)
            loop.post(Action.SET_MARKER, marker)

    loop = _run(tiny_golden, avatars, driving, tmp_path / "out", on_frame)
    count = len(records)
    assert [r.avatar for r in records] == [0] * 3 + [1] * (count - 3)
    assert [a.name for a in loop.avatars] == ["golden.png", "flipped.png"]
    assert loop.policy.avatars is loop.avatars
    frames = [cv2.imread(str(p)) for p in sorted((tmp_path / "out").glob("*.png"))]
    corner = slice(resolution - 12, resolution), slice(0, 20)  # where the label goes
    # The same run without the hooks: frames before the switch match, the label is only after.
    plain = _run(tiny_golden, avatars, driving, tmp_path / "plain", None)
    assert len(plain.avatars) == 1
    reference = [cv2.imread(str(p)) for p in sorted((tmp_path / "plain").glob("*.png"))]
    assert np.array_equal(frames[1], reference[1])
    labelled = np.abs(frames[-1][corner].astype(int) - reference[-1][corner].astype(int))
    assert labelled.max() > 40  # the label's box and text
