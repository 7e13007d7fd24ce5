"""The frame policy without threads, and the loop's marking of frames it makes itself: an
engine that is down, avatar switches, best-frame calibration, hold mode, the mirror toggle and
frames at rest sent unmarked by a remote backend."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from engines import KeypointArrays
from engines.errors import EngineUnavailable
from engines.watermark import Watermarker, detect
from live.animator import AnimatedFrame, MotionOptions
from live.controls import Action
from live.grabber import LatestFrameGrabber
from live.loop import FrameRecord, LiveLoop, LoopOptions
from live.marking import FrameMarker, MarkingOptions
from live.outputs import PngFolderSink
from live.pipeline import Crop, PreparedAvatar
from live.policy import FramePolicy
from live.virtualcam import VirtualCamera, VirtualCameraConfig
from tests.conftest import shared_path
from tests.live.fakes import IndexedSource, decode_index

RES = 16
KEYPOINTS = KeypointArrays(np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]), None)


class FakeAnimator:
    """Stands in for live.animator.Animator; engine calls fail while ``down`` is set."""

    def __init__(self, resolution: int = RES) -> None:
        self.resolution = resolution
        self.motion = MotionOptions()
        self.round_trip_ms = None
        self.engine = None  # like Animator.engine; a local engine without a status line
        self.avatar_keypoints = KEYPOINTS
        self.rest_image: np.ndarray | None = None
        self.down = False  # engine calls raise EngineUnavailable
        self.calibrations = 0
        self.resets = 0
        self.avatar: np.ndarray | None = None
        self.output: np.ndarray | None = None  # what animate() returns; None: the crop
        self.pts: float | None = None  # the capture time animate() got last

    def _check(self) -> None:
        if self.down:
            raise EngineUnavailable("server lost, reconnecting")

    def set_avatar(self, image: np.ndarray) -> None:
        self._check()
        self.avatar = image
        self.rest_image = image.copy()

    def calibrate(self, keypoints: KeypointArrays) -> None:
        self._check()
        self.calibrations += 1

    def reset_calibration(self) -> None:
        self.resets += 1

    def set_motion_scale(self, scale: float) -> None:
        self._check()
        self.motion = MotionOptions(scale=scale, smoothing=self.motion.smoothing)

    def set_motion_smoothing(self, strength: float) -> None:
        self.motion = MotionOptions(scale=self.motion.scale, smoothing=strength)

    def animate(
        self, crop: np.ndarray, out: np.ndarray | None = None, pts: float | None = None
    ) -> AnimatedFrame:
        self._check()
        self.pts = pts
        out = np.empty_like(crop) if out is None else out
        out[...] = crop if self.output is None else self.output
        return AnimatedFrame(out, KEYPOINTS)


def _avatars(count: int = 2) -> list[PreparedAvatar]:
    return [
        PreparedAvatar(f"a{i}", np.full((RES, RES, 3), 10 * (i + 1), np.uint8), True)
        for i in range(count)
    ]


def _crop(value: int) -> np.ndarray:
    return np.full((RES, RES, 3), value, np.uint8)


def test_best_frame_calibration_survives_an_engine_blip() -> None:
    animator = FakeAnimator()
    policy = FramePolicy(animator, _avatars(), best_frame=True)  # type: ignore[arg-type]
    policy.select_avatar(0)

    def calibrate_fails(keypoints) -> None:
        raise EngineUnavailable("server lost while setting the motion")

    animator.calibrate = calibrate_fails  # type: ignore[method-assign]
    shown = policy.frame(_crop(1))  # the closest pose yet: calibrating fails
    assert shown.status == "engine: server lost while setting the motion"
    animator.calibrate = lambda keypoints: None  # type: ignore[method-assign]
    assert policy.frame(_crop(2)).status == "ok"


def test_avatar_index_changes_only_once_the_engine_took_the_avatar() -> None:
    animator = FakeAnimator()
    policy = FramePolicy(animator, _avatars())  # type: ignore[arg-type]
    policy.select_avatar(0)
    animator.down = True
    with pytest.raises(EngineUnavailable):
        policy.select_avatar(1)
    assert policy.avatar_index == 0
    animator.down = False
    assert policy.step_avatar(1) and policy.avatar_index == 1


def test_hold_mode_does_not_show_the_previous_avatar_after_a_switch() -> None:
    animator = FakeAnimator()
    avatars = _avatars()
    policy = FramePolicy(animator, avatars, no_face="hold")  # type: ignore[arg-type]
    policy.select_avatar(0)
    assert policy.frame(_crop(99)).image[0, 0, 0] == 99
    assert policy.frame(None).status == "no face: holding the last frame"
    policy.select_avatar(1)
    shown = policy.frame(None)  # no face since the switch: the new avatar at rest
    assert shown.status == "no face: showing the avatar at rest"
    np.testing.assert_array_equal(shown.image, avatars[1].image)
    assert not shown.from_engine


def test_paused_and_engine_down_frames() -> None:
    animator = FakeAnimator()
    policy = FramePolicy(animator, _avatars())  # type: ignore[arg-type]
    policy.select_avatar(0)
    animator.down = True
    shown = policy.frame(_crop(5))  # nothing animated yet: the avatar at rest
    assert shown.status.startswith("engine: ") and not shown.from_engine
    animator.down = False
    policy.frame(_crop(5))
    animator.down = True
    held = policy.frame(_crop(6))
    assert held.from_engine and held.image[0, 0, 0] == 5
    policy.toggle_pause()
    paused = policy.frame(_crop(7))
    assert paused.status.startswith("paused") and not paused.from_engine


class _MirrorCropper:
    """A cropper that records the frames it saw since the last reset."""

    def __init__(self) -> None:
        self.resets = 0
        self.last_face = None

    def reset(self) -> None:
        self.resets += 1

    def __call__(self, frame: np.ndarray, timestamp: float, out: np.ndarray) -> Crop:
        out[...] = cv2.resize(frame, (RES, RES))
        return Crop(out, None, "resize")


def test_mirror_toggle_resets_the_tracker_and_the_motion_reference() -> None:
    animator = FakeAnimator()
    cropper = _MirrorCropper()
    grabber = LatestFrameGrabber(IndexedSource(12), mode="offline")
    resets_seen: list[tuple[int, int]] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        resets_seen.append((cropper.resets, animator.resets))
        if record.index == 3:
            loop.post(Action.TOGGLE_MIRROR)

    loop = LiveLoop(grabber, cropper, animator, _avatars(), on_frame=on_frame)  # type: ignore[arg-type]
    loop.run()
    assert loop.mirror
    before, after = resets_seen[3], resets_seen[-1]
    assert after[0] == before[0] + 1  # the framing stage tracked anew
    assert after[1] == before[1] + 1  # a new motion reference is taken


def test_frames_at_rest_carry_the_watermark_with_a_remote_backend(tmp_path, caplog) -> None:
    """A remote backend marks the frames its server makes (engine_marks); the frames the
    loop makes itself (paused, no face, engine down: the avatar at rest) must be marked here,
    in the file and on the virtual camera alike."""
    caplog.set_level(logging.INFO)
    photo = cv2.imread(str(shared_path("media", "avatars", "mona.jpg")))
    photo = cv2.cvtColor(
        cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    server_mark = Watermarker(256)
    animator = FakeAnimator(256)
    animator.output = server_mark.embed(photo[::-1].copy())  # what the "server" returns
    avatar = PreparedAvatar("mona", photo, True)

    class Cropper:
        last_face = None

        def __call__(self, frame, timestamp, out) -> Crop:
            index = decode_index(frame)
            if 4 <= index < 8 or index >= 12:  # no face in these frames
                return Crop(None, None, "lost")
            out[...] = photo
            return Crop(out, None, "tracking")

    statuses: list[str] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        statuses.append(record.status)
        if record.index in (1, 2):  # paused for frame 2
            loop.post(Action.TOGGLE_PAUSE)

    sent: list[np.ndarray] = []

    class Camera:
        device, width, height, fps = "/dev/null", 256, 256, 1000.0

        def send(self, frame: np.ndarray) -> None:
            sent.append(frame.copy())

        def sleep_until_next_frame(self) -> None:
            pass

        def close(self) -> None:
            pass

    folder = tmp_path / "out"
    folder.mkdir()
    sink = PngFolderSink(folder)
    grabber = LatestFrameGrabber(IndexedSource(14), mode="offline")
    config = VirtualCameraConfig(width=256, height=256, fps=30.0)
    with VirtualCamera(config, camera_factory=lambda *a, **k: Camera()) as camera:
        loop = LiveLoop(
            grabber,
            Cropper(),  # type: ignore[arg-type]
            animator,  # type: ignore[arg-type]
            [avatar],
            LoopOptions(no_face="rest"),
            sinks=[sink],
            virtual_camera=camera,
            marker=FrameMarker(MarkingOptions(), 256, engine_marks=True),
        )
        loop.on_frame = on_frame
        loop.run()
    sink.close()
    assert statuses[2].startswith("paused")
    assert statuses[4].startswith("no face: showing the avatar at rest")
    assert statuses[0] == "ok"
    files = sorted(folder.glob("*.png"))
    assert len(files) == len(statuses) == 14
    for i, path in enumerate(files):
        written = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert detect(written).marked, (i, statuses[i])
    assert len(sent) >= 14 and all(detect(frame).marked for frame in sent)
    # Frames the server made are passed on as they came, not marked twice.
    ok = statuses.index("ok")
    np.testing.assert_array_equal(
        cv2.cvtColor(cv2.imread(str(files[ok])), cv2.COLOR_BGR2RGB), animator.output
    )
