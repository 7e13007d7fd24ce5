"""Motion smoothing: a One Euro filter on the driving keypoints and jacobians, blended inside
the frame graph; changed live by keys or any controller, shown in the stats overlay."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import EngineOptions, FrameResult, KeypointArrays, create_engine
from export.checkpoint import load_model
from export.config import load_config
from export.model import Keypoints
from export.motion import MotionTransfer, relative_motion
from live.animator import Animator, MotionOptions
from live.cli import main
from live.controls import Action, action_for_key
from live.errors import SettingError
from live.grabber import LatestFrameGrabber
from live.loop import FrameRecord, LiveLoop
from live.pipeline import ResizeCropper
from live.preview import _format_stats
from live.smoothing import BETA, KeypointSmoother, min_cutoff_hz
from tests.conftest import Golden
from tests.live.fakes import IndexedSource
from tests.live.test_policy import FakeAnimator, _avatars

FPS = 30.0


def _run(smoother: KeypointSmoother, samples: np.ndarray, fps: float = FPS) -> np.ndarray:
    """What the generator's keypoints are for each sample (B x K x 2 each), through the
    transfer the smoother hands the graph, with the identity motion as the base."""
    k = samples.shape[1]  # samples: T x K x 2
    base = MotionTransfer(np.ones((1, k, 1), np.float32), np.zeros((1, k, 2), np.float32), None)
    seen = []
    for index, sample in enumerate(samples):
        time_s = index / fps
        weights = smoother.weights(time_s, (1, k))
        transfer = smoother.transfer(base, weights)
        seen.append(sample[None] * transfer.scale + transfer.offset)  # the graph's motion step
        smoother.update(KeypointArrays(sample[None], None), time_s, weights)
    return np.concatenate(seen)


def test_weights_follow_the_one_euro_formula_one_frame_late() -> None:
    smoother = KeypointSmoother(0.5)
    first = np.array([[[0.0, 0.0], [0.5, 0.5]]])
    assert smoother.weights(0.0, (1, 2)).tolist() == [[[1.0], [1.0]]]  # no history: as is
    smoother.update(KeypointArrays(first, None), 0.0, np.ones((1, 2, 1)))
    # The second frame: no speed seen yet, so the minimum cutoff.
    rate = 2 * math.pi * min_cutoff_hz(0.5) * 0.1
    second = smoother.weights(0.1, (1, 2))
    np.testing.assert_allclose(second, rate / (rate + 1), rtol=1e-6)
    moved = first + np.array([[[0.3, 0.4], [0.0, 0.0]]])  # keypoint 0 moves 0.5, keypoint 1 not
    smoother.update(KeypointArrays(moved, None), 0.1, second)
    # Its speed, low-passed at 1 Hz, raises keypoint 0's cutoff for the next frame only.
    speed_weight = (2 * math.pi * 0.1) / (2 * math.pi * 0.1 + 1)
    speed = speed_weight * 0.5 / 0.1
    fast = 2 * math.pi * (min_cutoff_hz(0.5) + BETA * speed) * 0.1
    third = smoother.weights(0.2, (1, 2))
    np.testing.assert_allclose(third[0, 0, 0], fast / (fast + 1), rtol=1e-5)
    np.testing.assert_allclose(third[0, 1, 0], second[0, 1, 0], rtol=1e-6)
    assert smoother.weights(0.1, (1, 2)).max() == 0.0  # a repeated time: keep the last value


def test_smoothing_steadies_a_still_noisy_face() -> None:
    rng = np.random.default_rng(0)
    still = np.array([[0.2, -0.1], [-0.3, 0.4], [0.0, 0.0]])
    noisy = still + rng.normal(0.0, 0.005, size=(150, 3, 2))  # shaking in low light
    raw = noisy[30:].std(axis=0)
    for strength, most in ((0.5, 0.6), (1.0, 0.45)):
        fed = _run(KeypointSmoother(strength), noisy)
        assert (fed[30:].std(axis=0) < most * raw).all(), strength
        assert np.abs(fed[30:].mean(axis=0) - still).max() < 0.003  # no drift
    np.testing.assert_array_equal(_run(KeypointSmoother(0.0), noisy), noisy)  # off: as is


def test_smoothing_follows_a_quick_move_with_a_bounded_lag() -> None:
    steps = np.zeros((60, 1, 2))
    steps[30:] = [0.3, 0.0]  # a head turn: 0.3 of the frame width at once
    for strength, frames in ((0.5, 5), (1.0, 10)):
        fed = _run(KeypointSmoother(strength), steps)[:, 0, 0]
        assert fed[30] < 0.3  # softened, not a jump
        assert np.all(np.diff(fed[30:]) >= -1e-6)  # monotonic (float32 motion), no overshoot
        assert fed[30:].max() <= 0.3 + 1e-6
        assert abs(fed[30 + frames] - 0.3) < 0.05 * 0.3, strength  # within 5% after that
    ramp = np.zeros((60, 1, 2))
    ramp[30:, 0, 0] = np.minimum(np.arange(30) / FPS, 0.3)  # a steady turn at 1 unit/s
    fed = _run(KeypointSmoother(0.5), ramp)[:, 0, 0]
    assert np.abs(fed - ramp[:, 0, 0]).max() < 0.05  # keeps up: a lag of under 0.05 s


def test_transfer_blends_keypoints_and_jacobians_as_the_graph_computes_them() -> None:
    rng = np.random.default_rng(1)
    k = 4
    base = MotionTransfer(
        np.full((1, k, 1), 1.3, np.float32),
        rng.normal(size=(1, k, 2)).astype(np.float32),
        rng.normal(size=(1, k, 2, 2)).astype(np.float32),
    )
    smoother = KeypointSmoother(0.7)
    previous = KeypointArrays(rng.normal(size=(1, k, 2)), rng.normal(size=(1, k, 2, 2)))
    smoother.update(previous, 0.0, np.ones((1, k, 1)))
    weights = smoother.weights(1 / FPS, (1, k))
    assert 0 < weights.min() < 1
    transfer = smoother.transfer(base, weights)
    drv, jac = rng.normal(size=(1, k, 2)), rng.normal(size=(1, k, 2, 2))
    blended = weights * drv + (1 - weights) * previous.value
    blended_jac = weights[..., None] * jac + (1 - weights[..., None]) * previous.jacobian
    np.testing.assert_allclose(
        drv * transfer.scale + transfer.offset, blended * base.scale + base.offset, atol=1e-5
    )
    np.testing.assert_allclose(
        jac @ transfer.jacobian + transfer.jacobian_offset, blended_jac @ base.jacobian, atol=1e-5
    )
    smoother.update(KeypointArrays(drv, jac), 1 / FPS, weights)
    np.testing.assert_allclose(smoother.smoothed.value, blended, atol=1e-6)
    np.testing.assert_allclose(smoother.smoothed.jacobian, blended_jac, atol=1e-6)


def test_a_gap_or_a_reset_restarts_the_filter() -> None:
    smoother = KeypointSmoother(1.0)
    sample = KeypointArrays(np.zeros((1, 2, 2)), None)
    smoother.update(sample, 0.0, np.ones((1, 2, 1)))
    assert smoother.weights(1 / FPS, (1, 2)).max() < 1
    assert smoother.weights(2.0, (1, 2)).min() == 1.0  # the face was away for 2 s
    smoother.update(sample, 2.0, np.ones((1, 2, 1)))
    smoother.reset()
    assert smoother.weights(2.0 + 1 / FPS, (1, 2)).min() == 1.0
    with pytest.raises(SettingError, match=r"--motion-smoothing 1\.5 is out of range"):
        smoother.set_strength(1.5)


def test_smoothing_flag(tmp_path, capsys) -> None:
    assert main(["--avatar", str(tmp_path / "a.png"), "--motion-smoothing", "2"]) == 2
    assert "--motion-smoothing 2.0 is out of range: expected 0 to 1" in capsys.readouterr().err


class CountingEngine:
    """The part of an Engine the Animator uses; counts motion uploads."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.io = SimpleNamespace(resolution=8, num_kp=3, jacobian=False, batch=1)
        self.uploads: list[MotionTransfer] = []

    def set_avatar(self, avatar: np.ndarray) -> KeypointArrays:
        return KeypointArrays(np.zeros((1, 3, 2), np.float32), None)

    def set_motion(self, transfer: MotionTransfer) -> None:
        self.uploads.append(transfer)

    def animate(self, driving: np.ndarray) -> FrameResult:
        kp = np.full((1, 3, 2), float(driving.mean()), np.float32)
        return FrameResult(np.zeros((1, 3, 8, 8), np.float32), KeypointArrays(kp, None))


def test_off_uploads_no_motion_per_frame_and_on_does() -> None:
    engine = CountingEngine()
    animator = Animator(engine)  # type: ignore[arg-type]
    animator.set_avatar(np.zeros((8, 8, 3), np.uint8))
    for index in range(4):
        animator.animate(np.full((8, 8, 3), index, np.uint8), pts=index / FPS)
    assert len(engine.uploads) == 2  # the avatar, then the reference on the first frame
    animator.set_motion_smoothing(0.5)
    for index in range(4, 8):
        animator.animate(np.full((8, 8, 3), index, np.uint8), pts=index / FPS)
    assert len(engine.uploads) == 2 + 4
    assert animator.smoothed_keypoints is not None
    animator.set_motion_smoothing(0.0)  # back to the plain transfer, uploaded once
    assert engine.uploads[-1].scale.max() == engine.uploads[1].scale.max()
    np.testing.assert_array_equal(engine.uploads[-1].offset, engine.uploads[1].offset)
    animator.animate(np.full((8, 8, 3), 9, np.uint8), pts=9 / FPS)
    assert len(engine.uploads) == 2 + 4 + 1 and animator.smoothed_keypoints is None
    with pytest.raises(SettingError, match="motion-smoothing"):
        animator.set_motion_smoothing(-0.1)


def test_a_real_engine_animates_the_smoothed_keypoints(tiny_golden: Golden, tmp_path: Path) -> None:
    """Through a torch engine, each frame equals the reference model fed the smoothed driving
    keypoints with the relative motion: the blend in the graph is the filter's."""
    a = tiny_golden.arrays
    config = load_config(tiny_golden.config, resolution=tiny_golden.resolution)
    model = load_model(tiny_golden.checkpoint, config)
    options = EngineOptions(backend="torch", precision="fp32", device="cpu", cache_dir=tmp_path)
    rng = np.random.default_rng(2)

    def uint8(image: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)

    source = uint8(a["source"])
    with (
        create_engine(tiny_golden.checkpoint, config, options) as engine,
        create_engine(tiny_golden.checkpoint, config, options) as other,
    ):
        animator = Animator(engine, MotionOptions(smoothing=0.6))
        plain = Animator(other, MotionOptions())  # the same frames without smoothing
        animator.set_avatar(source)
        plain.set_avatar(source)
        differs = []
        for index in range(8):
            driving = a["driving"][index % a["driving"].shape[0]]
            noisy = uint8(np.clip(driving + rng.normal(0, 0.03, driving.shape), 0, 1))
            frame = animator.animate(noisy, pts=index / FPS).image.copy()
            smoothed = animator.smoothed_keypoints
            avatar, reference = animator.avatar_keypoints, animator.reference
            motion = relative_motion(
                avatar.value, avatar.jacobian, reference.value, reference.jacobian, True
            )
            value = smoothed.value * motion.scale + motion.offset
            jacobian = smoothed.jacobian @ motion.jacobian
            with torch.inference_mode():
                expected = model.animate(
                    torch.from_numpy(source.astype(np.float32)[None] / 255).permute(0, 3, 1, 2),
                    Keypoints(torch.from_numpy(avatar.value), torch.from_numpy(avatar.jacobian)),
                    Keypoints(torch.from_numpy(value), torch.from_numpy(jacobian)),
                ).prediction
            want = uint8(expected[0].permute(1, 2, 0).numpy())
            assert np.abs(frame.astype(int) - want).max() <= 1, index
            unsmoothed = plain.animate(noisy).image  # calibrates on frame 0 too
            if index > 0:
                differs.append(np.abs(unsmoothed.astype(int) - frame).mean())
        assert min(differs) > 0 and max(differs) > 0.5  # the smoothing changed the frames


def test_keys_and_controllers_change_the_smoothing_live() -> None:
    assert action_for_key(ord(".")) == (Action.SMOOTHING_STRONGER, None)
    assert action_for_key(ord(",")) == (Action.SMOOTHING_WEAKER, None)
    animator = FakeAnimator()
    seen: list[tuple[int, float, float | None]] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        seen.append((record.index, loop.stats["motion smoothing"], animator.pts))
        if record.index == 1:
            loop.post(Action.SMOOTHING_STRONGER)
            loop.post(Action.SMOOTHING_STRONGER)
        elif record.index == 3:
            loop.post(Action.SMOOTHING_WEAKER)
        elif record.index == 5:
            loop.post(Action.SET_MOTION_SMOOTHING, 4.0)  # clamped to the range

    grabber = LatestFrameGrabber(IndexedSource(8), mode="offline")
    loop = LiveLoop(grabber, ResizeCropper(16), animator, _avatars(), on_frame=on_frame)  # type: ignore[arg-type]
    loop.run()
    values = {index: value for index, value, _ in seen}
    assert values[0] == values[1] == 0.0
    assert values[2] == pytest.approx(0.2) and values[4] == pytest.approx(0.1)
    assert values[7] == 1.0
    assert [pts for _, _, pts in seen] == [pytest.approx(i / 30) for i in range(8)]  # capture
    assert "smoothing 0.4" in _format_stats({"motion smoothing": 0.4})
    assert "smoothing off" in _format_stats({"motion smoothing": 0.0})
