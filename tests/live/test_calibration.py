"""int8 calibration frames from the run itself: framed like the live loop, read without
disturbing the run's input, collected only when a model is calibrated."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from live.calibration import calibration_source, driving_crops
from live.cli import main
from live.framing import FramingConfig
from live.pipeline import PreparedAvatar
from live.sources import open_source
from tests.conftest import Golden, shared_path

# int8 frames vs the fp32 golden, in grey levels (tests/engines/test_contract.py's bounds).
INT8_MEAN_LEVELS = 2.0
INT8_MAX_LEVELS = 16


def _write_png(path: Path, image: np.ndarray) -> None:
    rgb = np.round(image * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_driving_crops_are_framed_faces_in_fresh_buffers() -> None:
    gif = shared_path("media", "driving", "mona-talking.gif")
    with open_source(str(gif)) as source:
        crops = driving_crops(source, 64, True, FramingConfig(), count=4)
    assert len(crops) == 4
    assert all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c in crops)
    assert len({id(c) for c in crops}) == 4  # copies, not the cropper's reused buffers
    assert len({c.tobytes() for c in crops}) > 1  # successive frames of a talking face


def test_a_file_input_is_read_by_a_second_reader(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        frame = np.full((48, 48, 3), 40 * i, np.uint8)
        assert cv2.imwrite(str(folder / f"{i}.png"), frame)
    avatar = PreparedAvatar("a.png", np.zeros((32, 32, 3), np.uint8), True)
    with open_source(str(folder)) as run_source:
        collect = calibration_source(str(folder), run_source, [avatar], 32, False, FramingConfig())
        frames = collect()
        first = run_source.read()
    assert first is not None and first.index == 0 and first.image.mean() == 0  # untouched
    assert len(frames.driving) == 5 and frames.avatars[0] is avatar.image
    assert [int(d.mean()) for d in frames.driving] == [0, 40, 80, 120, 160]
    assert "first 5 frames" in frames.description


def test_int8_run_calibrates_on_first_use_only(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    avatar = tmp_path / "avatar.png"
    _write_png(avatar, tiny_golden.arrays["source"])
    driving = tmp_path / "driving"
    driving.mkdir()
    for i, frame in enumerate(tiny_golden.arrays["driving"]):
        _write_png(driving / f"{i:03d}.png", frame)

    def run(*extra: str) -> str:
        out = tmp_path / "out"
        args = [
            "--avatar", str(avatar), "--input", str(driving), "--output", str(out),
            "--checkpoint", str(tiny_golden.checkpoint), "--config", str(tiny_golden.config),
            "--resolution", "64", "--no-crop", "--precision", "int8", "--no-watermark",
            "--overwrite", *extra,
        ]  # fmt: skip
        assert main(args) == 0
        expected = np.round(tiny_golden.arrays["prediction"] * 255)
        written = sorted(out.iterdir())
        assert len(written) == len(expected)
        for path, frame in zip(written, expected, strict=True):
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(float)
            error = np.abs(image - frame)
            assert error.mean() <= INT8_MEAN_LEVELS and error.max() <= INT8_MAX_LEVELS
        return capfd.readouterr().err

    first = run()
    assert "calibrating int8 on 4 samples: 1 avatar(s) x 4 driving frame(s)" in first
    assert "int8 calibration and check done in" in first
    assert "openvino on cpu (int8), picked by --backend auto" in first
    assert "calibrating" not in run()  # cached per checkpoint, resolution and device
    again = run("--recalibrate-int8")
    assert "dropped the cached int8 model" in again and "int8 calibration and check done" in again
