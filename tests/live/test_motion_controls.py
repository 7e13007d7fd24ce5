"""Motion strength: the keypoints' change from the reference pose, scaled; changed live by
keys or any controller, shown in the stats overlay."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engines import FrameResult, KeypointArrays
from live.animator import Animator, MotionOptions
from live.cli import main
from live.controls import Action, action_for_key
from live.errors import SettingError
from live.grabber import LatestFrameGrabber
from live.loop import FrameRecord, LiveLoop
from live.pipeline import ResizeCropper
from live.preview import _format_stats
from tests.live.fakes import IndexedSource
from tests.live.test_policy import FakeAnimator, _avatars

AVATAR_KP = np.array([[[0.1, 0.2], [0.5, -0.3], [-0.4, 0.4]]], np.float32)
REFERENCE_KP = np.array([[[0.0, 0.1], [0.3, -0.2], [-0.2, 0.3]]], np.float32)


class MotionEngine:
    """The part of an Engine the Animator uses; keeps the motion transfer it was given."""

    def __init__(self) -> None:
        self.io = SimpleNamespace(resolution=8, num_kp=3, jacobian=False, batch=1)
        self.motion = None

    def set_avatar(self, avatar: np.ndarray) -> KeypointArrays:
        return KeypointArrays(AVATAR_KP, None)

    def set_motion(self, transfer) -> None:
        self.motion = transfer

    def animate(self, driving: np.ndarray) -> FrameResult:
        return FrameResult(np.zeros((1, 3, 8, 8), np.float32), KeypointArrays(REFERENCE_KP, None))

    def moved(self, driving: np.ndarray) -> np.ndarray:
        """The keypoints the generator gets for ``driving`` (the graph's motion step)."""
        return driving * self.motion.scale + self.motion.offset


def test_motion_scale_multiplies_the_change_from_the_reference() -> None:
    engine = MotionEngine()
    animator = Animator(engine, MotionOptions(adapt_scale=False))  # type: ignore[arg-type]
    animator.set_avatar(np.zeros((8, 8, 3), np.uint8))
    animator.calibrate(KeypointArrays(REFERENCE_KP, None))
    driving = REFERENCE_KP + np.array([[[0.05, -0.02], [0.0, 0.04], [-0.03, 0.0]]], np.float32)
    full = engine.moved(driving) - AVATAR_KP
    for strength in (0.0, 0.5, 1.7):
        animator.set_motion_scale(strength)
        np.testing.assert_allclose(engine.moved(driving) - AVATAR_KP, strength * full, atol=1e-5)
        np.testing.assert_allclose(engine.moved(REFERENCE_KP), AVATAR_KP, atol=1e-6)
    assert animator.motion.scale == 1.7
    with pytest.raises(SettingError, match="motion-scale"):
        animator.set_motion_scale(9.0)
    assert animator.motion.scale == 1.7  # unchanged by the refused value


def test_motion_scale_flag(tmp_path, capsys) -> None:
    assert main(["--avatar", str(tmp_path / "a.png"), "--motion-scale", "-1"]) == 2
    assert "--motion-scale -1.0 is out of range: expected 0 to 3" in capsys.readouterr().err


def test_keys_and_controllers_change_the_strength_live() -> None:
    assert action_for_key(ord("+")) == (Action.MOTION_STRONGER, None)
    assert action_for_key(ord("-")) == (Action.MOTION_WEAKER, None)
    animator = FakeAnimator()
    seen: list[tuple[int, float]] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        seen.append((record.index, loop.stats["motion scale"]))
        if record.index == 1:
            loop.post(Action.MOTION_STRONGER)
            loop.post(Action.MOTION_STRONGER)
        elif record.index == 3:
            loop.post(Action.MOTION_WEAKER)
        elif record.index == 5:
            loop.post(Action.SET_MOTION_SCALE, 7.5)  # clamped to the range

    grabber = LatestFrameGrabber(IndexedSource(8), mode="offline")
    loop = LiveLoop(grabber, ResizeCropper(16), animator, _avatars(), on_frame=on_frame)  # type: ignore[arg-type]
    loop.run()
    scales = dict(seen)
    assert scales[0] == scales[1] == 1.0
    assert scales[2] == pytest.approx(1.2) and scales[4] == pytest.approx(1.1)
    assert scales[7] == 3.0
    assert "motion x1.2" in _format_stats({"motion scale": 1.2, "fps": 9.0})
