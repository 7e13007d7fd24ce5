"""Tests for live.framing: One Euro filter, face tracker, crops and avatar framing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from live.errors import SettingError
from live.face import FaceBox, FaceDetector
from live.framing import (
    CropBox,
    FaceTracker,
    FramingConfig,
    OneEuroFilter,
    center_crop_box,
    crop_box_for_face,
    crop_square,
    frame_avatar,
)
from live.sources import open_source
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def image_detector() -> Iterator[FaceDetector]:
    with FaceDetector(mode="image") as detector:
        yield detector


# --- One Euro filter ----------------------------------------------------------------------


def test_filter_matches_the_one_euro_formula() -> None:
    plain = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, size=1)
    assert plain(np.array([0.0]), 0.0)[0] == 0.0  # first sample passes through
    rate = 2 * math.pi * 1.0 * 0.1
    assert plain(np.array([1.0]), 0.1)[0] == pytest.approx(rate / (rate + 1))

    adaptive = OneEuroFilter(min_cutoff=1.0, beta=1.0, d_cutoff=1.0, size=1)
    adaptive(np.array([0.0]), 0.0)
    speed = rate / (rate + 1) * (1.0 - 0.0) / 0.1  # low-passed derivative
    cutoff = 1.0 + 1.0 * speed
    fast_rate = 2 * math.pi * cutoff * 0.1
    assert adaptive(np.array([1.0]), 0.1)[0] == pytest.approx(fast_rate / (fast_rate + 1))


def test_filter_smooths_a_noisy_static_signal() -> None:
    rng = np.random.default_rng(0)
    config = FramingConfig()
    one_euro = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff, size=3)
    noisy = 0.5 + rng.normal(0.0, 0.005, size=(300, 3))
    smoothed = np.array([one_euro(sample, index / 30).copy() for index, sample in enumerate(noisy)])
    assert smoothed[30:].var(axis=0).max() < 0.15 * noisy[30:].var(axis=0).min()
    assert np.abs(smoothed[30:].mean(axis=0) - 0.5).max() < 0.003


def test_filter_follows_a_step_with_bounded_lag() -> None:
    config = FramingConfig()
    one_euro = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff, size=1)
    outputs = []
    for index in range(90):
        value = 0.3 if index < 30 else 0.6
        outputs.append(float(one_euro(np.array([value]), index / 30)[0]))
    after = np.array(outputs[30:])
    assert after[0] < 0.6  # smoothed, not a jump
    assert np.all(after <= 0.6 + 1e-9)  # never overshoots
    assert np.all(np.diff(after) >= -1e-12)  # moves monotonically towards the target
    assert abs(after[9] - 0.6) < 0.05 * 0.3  # within 5% of the step after 0.3 s


def test_filter_ignores_repeated_timestamps_and_resets() -> None:
    one_euro = OneEuroFilter(1.0, 0.0, 1.0, size=2)
    one_euro(np.array([1.0, 2.0]), 1.0)
    first = one_euro(np.array([2.0, 4.0]), 1.1).copy()
    again = one_euro(np.array([9.0, 9.0]), 1.1)
    assert np.array_equal(again, first)
    assert first[0] != first[1]  # each component filtered on its own
    one_euro.reset()
    assert not one_euro.initialized
    assert one_euro(np.array([7.0, 8.0]), 0.5).tolist() == [7.0, 8.0]


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("scale", 5.0, "scale=5.0 is out of range: expected 1 to 4"),
        ("scale", 0.5, "scale=0.5 is out of range"),
        ("vertical_shift", 1.5, "vertical_shift=1.5 is out of range: expected -1 to 1"),
        ("min_cutoff", 0.0, "min_cutoff=0.0 is out of range"),
        ("beta", -1.0, "beta=-1.0 is out of range"),
        ("d_cutoff", float("nan"), "d_cutoff=nan is out of range"),
        ("hold_seconds", -0.1, "hold_seconds=-0.1 is out of range: expected 0 to 60"),
    ],
)
def test_config_validation(field: str, value: float, expected: str) -> None:
    with pytest.raises(SettingError, match=expected.replace(".", r"\.")) as info:
        FramingConfig(**{field: value})
    assert isinstance(info.value, ValueError)


def test_default_config_is_valid() -> None:
    config = FramingConfig()
    assert 1.0 <= config.scale <= 4.0 and config.vertical_shift > 0 and config.hold_seconds > 0


# --- tracker ------------------------------------------------------------------------------


FACE = FaceBox(x=200, y=150, width=100, height=120, score=0.9)


def test_first_box_is_the_framed_face() -> None:
    state = FaceTracker().update(FACE, 0.0, (640, 480))
    assert state.status == "tracking" and state.face == FACE
    assert state.box is not None
    assert state.box.size == pytest.approx(1.8 * 120)
    assert state.box.center[0] == pytest.approx(250)
    assert state.box.center[1] == pytest.approx(210 - 0.2 * 120)
    assert state.box.contains(FACE)
    assert crop_box_for_face(FACE, FramingConfig()) == state.box


def test_box_contains_a_fast_moving_face() -> None:
    tracker = FaceTracker()
    for index in range(40):
        face = FaceBox(x=50 + 12 * index, y=100, width=80, height=90, score=0.9)
        state = tracker.update(face, index / 30, (1280, 720))
        assert state.box is not None and state.box.contains(face)


def test_hold_then_lost_then_resume_without_lag() -> None:
    tracker = FaceTracker(FramingConfig(hold_seconds=0.5))
    for index in range(31):
        state = tracker.update(FACE, index / 30, (640, 480))
    assert state.status == "tracking"
    kept = state.box
    holding = tracker.update(None, 1.2, (640, 480))
    assert (holding.status, holding.box, holding.face) == ("holding", kept, None)
    assert tracker.update(None, 1.5, (640, 480)).status == "holding"
    lost = tracker.update(None, 1.51, (640, 480))
    assert (lost.status, lost.box) == ("lost", None)
    assert tracker.update(None, 2.0, (640, 480)).status == "lost"
    moved = FaceBox(x=400, y=200, width=100, height=120, score=0.8)
    back = tracker.update(moved, 3.0, (640, 480))
    assert back.status == "tracking"
    assert back.box == crop_box_for_face(moved, tracker.config)  # no lag across the gap


def test_short_gap_keeps_filtering() -> None:
    tracker = FaceTracker()
    for index in range(30):
        tracker.update(FACE, index / 30, (640, 480))
    tracker.update(None, 1.0, (640, 480))
    moved = FaceBox(x=230, y=150, width=100, height=120, score=0.9)
    state = tracker.update(moved, 1.1, (640, 480))
    assert state.box is not None
    raw = crop_box_for_face(moved, tracker.config)
    assert FACE.center[0] < state.box.center[0] < raw.center[0]


def test_no_face_before_any_face_is_lost() -> None:
    state = FaceTracker().update(None, 0.0, (640, 480))
    assert (state.status, state.box, state.face) == ("lost", None, None)


def test_reset_starts_a_fresh_track() -> None:
    tracker = FaceTracker()
    tracker.update(FACE, 0.0, (640, 480))
    tracker.reset()
    assert tracker.status == "lost"
    assert tracker.update(None, 0.1, (640, 480)).status == "lost"
    moved = FaceBox(x=10, y=10, width=50, height=50, score=0.9)
    assert tracker.update(moved, 0.2, (640, 480)).box == crop_box_for_face(moved, tracker.config)


def test_tracking_the_driving_clip_is_steady_and_contains_the_face() -> None:
    path = shared_path("media", "driving", "mona-talking.gif")
    tracker = FaceTracker()
    centers, sizes = [], []
    with FaceDetector(mode="video") as detector, open_source(path) as source:
        for frame in source:
            face = detector.detect(frame.image, frame.index * 40)
            state = tracker.update(face, frame.index / 25, source.size or (0, 0))
            assert face is not None and state.status == "tracking"
            assert state.box is not None and state.box.contains(face)
            centers.append(state.box.center)
            sizes.append(state.box.size)
    jumps = np.linalg.norm(np.diff(np.array(centers), axis=0), axis=1)
    assert len(centers) == 50
    assert float(jumps.max()) < 0.08 * min(sizes)


# --- crop_square --------------------------------------------------------------------------


def numbered_image(height: int = 60, width: int = 80) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    image[..., 1] = np.arange(height, dtype=np.uint8)[:, None]
    image[..., 2] = 200
    return image


def test_crop_inside_is_an_exact_slice() -> None:
    image = numbered_image()
    out = crop_square(image, CropBox(10, 5, 40), 40)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert np.array_equal(out, image[5:45, 10:50])


def test_crop_pads_black_outside_the_image() -> None:
    image = numbered_image()
    out = crop_square(image, CropBox(-10, -20, 50), 50)
    assert np.all(out[:20] == 0) and np.all(out[:, :10] == 0)
    assert np.array_equal(out[20:, 10:], image[0:30, 0:40])
    right = crop_square(image, CropBox(60, 40, 40), 40)
    assert np.array_equal(right[:20, :20], image[40:60, 60:80])
    assert np.all(right[20:] == 0) and np.all(right[:, 20:] == 0)


def test_crop_pads_when_scaling() -> None:
    image = np.full((100, 100, 3), 255, np.uint8)
    out = crop_square(image, CropBox(-50, 0, 100), 50)
    assert np.all(out[:, :25] == 0)
    assert np.all(out[:, 25:] == 255)
    grown = crop_square(image, CropBox(50, 50, 100), 200)
    assert np.all(grown[:100, :100] == 255)
    assert np.all(grown[100:] == 0) and np.all(grown[:, 100:] == 0)


def test_crop_completely_outside_is_black() -> None:
    out = crop_square(numbered_image(), CropBox(500, 500, 30), 16)
    assert out.shape == (16, 16, 3) and not out.any()


def test_crop_resamples_a_large_area() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, 100:] = 240
    out = crop_square(image, CropBox(0, 0, 200), 20)
    assert np.all(out[:, :9] == 0) and np.all(out[:, 11:] == 240)


def test_crop_writes_into_out_and_clears_stale_pixels() -> None:
    image = numbered_image()
    out = np.full((32, 32, 3), 77, np.uint8)
    result = crop_square(image, CropBox(-16, 0, 32), 32, out=out)
    assert result is out
    assert np.all(out[:, :16] == 0)
    assert np.array_equal(out[:, 16:], image[0:32, 0:16])
    with pytest.raises(ValueError, match="out must have shape"):
        crop_square(image, CropBox(0, 0, 32), 32, out=np.zeros((32, 32, 3), np.float32))


# --- avatar framing -----------------------------------------------------------------------


def test_center_crop_box() -> None:
    assert center_crop_box(640, 480) == CropBox(80, 0, 480)
    assert center_crop_box(300, 500) == CropBox(0, 100, 300)


@pytest.mark.parametrize("name", ["mona.jpg", "einstein.jpg", "obama.jpg"])
def test_frame_avatar_keeps_the_face_inside_the_photo(
    image_detector: FaceDetector, name: str
) -> None:
    image = np.asarray(Image.open(shared_path("media", "avatars", name)).convert("RGB"))
    height, width = image.shape[:2]
    box, found = frame_avatar(image, image_detector)
    face = image_detector.detect(image)
    assert found and face is not None
    assert box.x >= 0 and box.y >= 0
    assert box.x + box.size <= width + 1e-6 and box.y + box.size <= height + 1e-6
    assert box.size >= face.side
    center_x, center_y = face.center
    assert box.x < center_x < box.x + box.size and box.y < center_y < box.y + box.size


def test_frame_avatar_without_a_face_uses_the_center(image_detector: FaceDetector) -> None:
    blank = np.full((300, 400, 3), 128, np.uint8)
    assert frame_avatar(blank, image_detector) == (CropBox(50, 0, 300), False)


def test_large_shrinks_match_area_averaging() -> None:
    """A 720p face crop shrunk to the model size (block average first, then INTER_AREA) is
    the direct INTER_AREA resize to within a level or two, inside the image and at its edge."""
    rng = np.random.default_rng(1)
    image = cv2.resize(rng.integers(0, 255, (90, 160, 3), np.uint8), (1280, 720))
    direct = cv2.resize(image[10:710, 290:990], (256, 256), interpolation=cv2.INTER_AREA)
    out = crop_square(image, CropBox(290, 10, 700), 256)
    assert np.abs(out.astype(int) - direct).mean() < 2.5
    edge = crop_square(image, CropBox(-100, 0, 700), 256)  # 100 px off the left edge
    inside = cv2.resize(image[:700, :600], (219, 256), interpolation=cv2.INTER_AREA)
    assert int(edge[:, :37].max()) == 0
    assert np.abs(edge[:, 37:].astype(int) - inside).mean() < 2.5
