"""The whole live loop, face detection and framing included, on the test media."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from engines import KeypointArrays
from live.animator import AnimatedFrame, MotionOptions
from live.app import run
from live.cli import build_parser, main, options_from_args
from live.controls import Action
from live.grabber import LatestFrameGrabber
from live.loop import FrameRecord, LiveLoop, LoopOptions
from live.pipeline import PreparedAvatar, ResizeCropper
from live.virtualcam import VirtualCamera, VirtualCameraConfig
from tests.conftest import Golden, shared_path
from tests.live.conftest import run_on_display
from tests.live.fakes import IndexedSource, decode_index


def _options(golden: Golden, avatar: Path | str, driving: Path | str, *extra: str):
    args = build_parser().parse_args(
        [
            "--avatar",
            str(avatar),
            "--input",
            str(driving),
            "--checkpoint",
            str(golden.checkpoint),
            "--config",
            str(golden.config),
            "--resolution",
            str(golden.resolution),
            "--backend",
            "torch",
            *extra,
        ]
    )
    return options_from_args(args)


def _gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def _write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def _collect():
    records: list[FrameRecord] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        records.append(record)

    return records, on_frame


def test_end_to_end_on_talking_clip(tiny_golden: Golden, tmp_path: Path) -> None:
    clip = shared_path("media", "driving", "mona-talking.gif")
    avatar = shared_path("media", "avatars", "einstein.jpg")
    out = tmp_path / "out"
    records, on_frame = _collect()
    loop = run(_options(tiny_golden, avatar, clip, "--output", str(out)), on_frame=on_frame)
    frames = _gif_frames(clip)
    assert len(records) == len(frames) == 50
    assert len(list(out.glob("*.png"))) == 50
    assert [r.index for r in records] == list(range(50))
    assert loop.dropped == 0
    for record in records:
        assert record.crop_status == "tracking"
        assert record.face is not None and record.box is not None
        assert record.box.contains(record.face), (record.index, record.box, record.face)
    centers = np.array([record.box.center for record in records])
    sizes = np.array([record.box.size for record in records])
    jumps = np.linalg.norm(np.diff(centers, axis=0), axis=1) / sizes[1:]
    assert jumps.max() < 0.08, jumps.max()
    # The crop follows the head: it is not frozen.
    assert np.ptp(centers, axis=0).max() > 2


def test_face_disappears_then_returns(tiny_golden: Golden, tmp_path: Path) -> None:
    frames = _gif_frames(shared_path("media", "driving", "mona-talking.gif"))[:36]
    for i in range(12, 30):  # 18 frames (0.72 s at 25 fps) with no face at all
        frames[i] = np.zeros_like(frames[i])
    driving = _write_folder(tmp_path / "driving", frames)
    avatar = shared_path("media", "avatars", "obama.jpg")
    out = tmp_path / "out"
    records, on_frame = _collect()
    run(_options(tiny_golden, avatar, driving, "--output", str(out)), on_frame=on_frame)
    assert len(records) == 36 and len(list(out.glob("*.png"))) == 36
    statuses = [r.crop_status for r in records]
    assert statuses[:12] == ["tracking"] * 12
    assert "holding" in statuses[12:30] and statuses[29] == "lost"
    assert all(r.status.startswith("no face") for r in records[12:30] if r.crop_status == "lost")
    assert statuses[30:] == ["tracking"] * 6
    # While holding, the last crop box is still animated; once lost, the last animated frame
    # is repeated.
    lost = [i for i, status in enumerate(statuses) if status == "lost"]
    last_animated = cv2.imread(str(out / f"{lost[0] - 1:06d}.png"))
    for i in lost:
        assert np.array_equal(cv2.imread(str(out / f"{i:06d}.png")), last_animated)


def _as_output(image: np.ndarray) -> np.ndarray:
    """``image`` as outputs get it: with the invisible watermark (live.marking)."""
    from live.marking import FrameMarker, MarkingOptions

    return FrameMarker(MarkingOptions(), image.shape[0])(image).copy()


def test_rest_fallback_shows_the_avatar(tiny_golden: Golden, tmp_path: Path) -> None:
    frames = [np.zeros((120, 160, 3), np.uint8)] * 3
    driving = _write_folder(tmp_path / "driving", frames)
    records, on_frame = _collect()
    loop = run(
        _options(
            tiny_golden,
            shared_path("media", "avatars", "mona.jpg"),
            driving,
            "--output",
            str(tmp_path / "out"),
            "--no-face",
            "rest",
        ),
        on_frame=on_frame,
    )
    assert all(r.status == "no face: showing the avatar at rest" for r in records)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "000002.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, _as_output(loop.animator.rest_image))


def test_avatar_without_a_face_warns_and_centre_crops(
    tiny_golden: Golden, tmp_path: Path, caplog
) -> None:
    faceless = tmp_path / "landscape.png"
    gradient = np.linspace(0, 255, 300 * 200, dtype=np.float32).reshape(200, 300)
    cv2.imwrite(str(faceless), np.dstack([gradient] * 3).astype(np.uint8))
    frames = _gif_frames(shared_path("media", "driving", "mona-talking.gif"))[:3]
    driving = _write_folder(tmp_path / "driving", frames)
    with caplog.at_level(logging.WARNING, logger="avatarcam"):
        loop = run(_options(tiny_golden, faceless, driving, "--output", str(tmp_path / "o")))
    assert "no face found in the avatar" in caplog.text and "landscape.png" in caplog.text
    assert loop.avatars[0].face_found is False
    assert loop.frames_out == 3


def test_camera_that_fails_to_open(tiny_golden: Golden, capsys) -> None:
    code = main(
        [
            "--avatar",
            str(shared_path("media", "avatars", "mona.jpg")),
            "--input",
            "7",
            "--checkpoint",
            str(tiny_golden.checkpoint),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "error:" in err and "7" in err and "--list-cameras" in err
    assert "Traceback" not in err


def _tiny_inputs(golden: Golden, tmp_path: Path) -> tuple[Path, Path]:
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    source = np.round(golden.arrays["source"] * 255).astype(np.uint8)
    cv2.imwrite(str(avatars / "1-golden.png"), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(avatars / "2-flipped.png"), cv2.cvtColor(source[:, ::-1], cv2.COLOR_RGB2BGR))
    frames = [np.round(f * 255).astype(np.uint8) for f in golden.arrays["driving"]]
    frames = frames + frames[::-1]  # 12 frames
    driving = _write_folder(tmp_path / "driving", frames)
    return avatars, driving


def _outputs(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)).astype(int) for p in sorted(folder.glob("*.png"))]


def test_switching_avatars_mid_stream(tiny_golden: Golden, tmp_path: Path) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)

    def switch_at_4(record: FrameRecord, loop: LiveLoop) -> None:
        if record.index == 4:
            loop.post(Action.NEXT_AVATAR)

    records, collect = _collect()

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        collect(record, loop)
        switch_at_4(record, loop)

    run(
        _options(tiny_golden, avatars, driving, "--output", str(tmp_path / "a"), "--no-crop"),
        on_frame=on_frame,
    )
    assert [r.avatar for r in records] == [0] * 5 + [1] * 7
    # Reference: the same stream with the second avatar from the start.
    (tmp_path / "only").mkdir()
    (avatars / "2-flipped.png").rename(tmp_path / "only" / "2-flipped.png")
    run(
        _options(
            tiny_golden, tmp_path / "only", driving, "--output", str(tmp_path / "b"), "--no-crop"
        )
    )
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    for i in range(5, 12):
        assert np.abs(a[i] - b[i]).max() <= 1, i
    assert np.abs(a[2] - b[2]).max() > 10


def test_recalibrating_mid_stream(tiny_golden: Golden, tmp_path: Path) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    (avatars / "2-flipped.png").unlink()

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        if record.index == 5:
            loop.post(Action.RECALIBRATE)

    run(
        _options(tiny_golden, avatars, driving, "--output", str(tmp_path / "a"), "--no-crop"),
        on_frame=on_frame,
    )
    # Reference: the stream starting at frame 6, whose first frame is its reference.
    later = tmp_path / "later"
    later.mkdir()
    for path in sorted(driving.glob("*.png"))[6:]:
        path.rename(later / path.name)
    run(_options(tiny_golden, avatars, later, "--output", str(tmp_path / "b"), "--no-crop"))
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    for i in range(6):
        assert np.abs(a[6 + i] - b[i]).max() <= 1, i


class FakeCamera:
    """An object with pyvirtualcam.Camera's interface that keeps what it is sent."""

    def __init__(self, width: int, height: int, fps: float, device: str | None):
        self.width, self.height, self.fps = width, height, fps
        self.device = device or "/dev/video-fake"
        self.frames: list[np.ndarray] = []
        self.closed = False

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_virtual_camera_receives_every_frame(tiny_golden: Golden, tmp_path: Path) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    cameras: list[FakeCamera] = []

    def factory(width, height, fps, device):
        cameras.append(FakeCamera(width, height, fps, device))
        return cameras[-1]

    run(
        _options(
            tiny_golden,
            avatars,
            driving,
            "--no-crop",
            "--virtual-cam",
            "--virtual-cam-size",
            "640x360",
            "--virtual-cam-fps",
            "30",
        ),
        camera_factory=factory,
    )
    (camera,) = cameras
    assert (camera.width, camera.height, camera.fps) == (640, 360, 30)
    assert len(camera.frames) == 12 and camera.closed
    for frame in camera.frames:
        assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
        assert frame[:, :100].max() == 0  # letterbox bars
        assert frame[:, 200:440].max() > 0  # the avatar in the middle


def test_runs_without_a_display(tiny_golden: Golden, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    with caplog.at_level(logging.WARNING, logger="avatarcam"):
        loop = run(
            _options(
                tiny_golden,
                avatars,
                driving,
                "--no-crop",
                "--preview",
                "--output",
                str(tmp_path / "o"),
            )
        )
    assert loop.preview is None and loop.frames_out == 12
    assert "no display found" in caplog.text


def test_file_input_with_nothing_to_do(tiny_golden: Golden, tmp_path: Path, capsys) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    args = [
        "--avatar",
        str(avatars),
        "--input",
        str(driving),
        "--checkpoint",
        str(tiny_golden.checkpoint),
        "--config",
        str(tiny_golden.config),
        "--no-preview",
    ]
    assert main(args) == 2
    assert "--output" in capsys.readouterr().err


PREVIEW_SCRIPT = """
import json, sys
import cv2
from live.app import run
from live.cli import build_parser, options_from_args

report = {"frames": 0}

def on_frame(record, loop):
    report["frames"] += 1
    report["visible"] = cv2.getWindowProperty(loop.preview.title, cv2.WND_PROP_VISIBLE)
    if record.index == 6:
        canvas = loop.preview._canvas
        report["canvas"] = list(canvas.shape)
        report["std"] = float(canvas.std())
        cv2.imwrite(sys.argv[2], cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))

options = options_from_args(build_parser().parse_args(json.loads(sys.argv[1])))
loop = run(options, on_frame=on_frame)
report["preview"] = loop.preview is not None
print("REPORT " + json.dumps(report))
"""


@pytest.mark.display
def test_preview_window_under_xvfb(tiny_golden: Golden, tmp_path: Path, xvfb_display) -> None:
    """The loop opens the preview window on a virtual display and draws every frame.

    Runs in a child process: OpenCV's Qt backend aborts a process whose X server goes away.
    """
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    args = [
        "--avatar", str(avatars), "--input", str(driving), "--no-crop", "--preview",
        "--output", str(tmp_path / "o"), "--checkpoint", str(tiny_golden.checkpoint),
        "--config", str(tiny_golden.config), "--resolution", "64", "--backend", "torch",
    ]  # fmt: skip
    shot = tmp_path / "preview.png"
    report = run_on_display(PREVIEW_SCRIPT, xvfb_display, json.dumps(args), str(shot))
    assert report["preview"] and report["frames"] == 12
    assert report["visible"] >= 1
    assert report["canvas"][0] == 360 and report["std"] > 5
    image = cv2.imread(str(shot))
    # Camera panel on the left (with the green crop box), the animated avatar on the right.
    assert image.shape[1] > image.shape[0]


def test_best_frame_mode_calibrates_on_the_closest_pose(
    tiny_golden: Golden, tmp_path: Path
) -> None:
    """The driving frame equal to the avatar matches its keypoints exactly: it must win."""
    avatars, _ = _tiny_inputs(tiny_golden, tmp_path)
    (avatars / "2-flipped.png").unlink()
    frames = [np.round(f * 255).astype(np.uint8) for f in tiny_golden.arrays["driving"]]
    source = np.round(tiny_golden.arrays["source"] * 255).astype(np.uint8)
    frames.insert(3, source)
    driving = _write_folder(tmp_path / "best", frames)
    loop = run(
        _options(tiny_golden, avatars, driving, "--no-crop", "--best-frame", "--output",
                 str(tmp_path / "o"))
    )  # fmt: skip
    reference = loop.animator.reference
    assert reference is not None
    np.testing.assert_allclose(reference.value, loop.animator.avatar_keypoints.value, atol=1e-5)
    # Without best-frame mode the first frame is the reference.
    first = run(
        _options(tiny_golden, avatars, driving, "--no-crop", "--output", str(tmp_path / "p"))
    )
    assert np.abs(first.animator.reference.value - reference.value).max() > 1e-3


def test_mirror_flips_the_camera_view(tiny_golden: Golden, tmp_path: Path) -> None:
    frames = _gif_frames(shared_path("media", "driving", "mona-talking.gif"))[:4]
    frames = [np.pad(f, ((0, 0), (0, 400), (0, 0))) for f in frames]  # face on the left
    driving = _write_folder(tmp_path / "driving", frames)
    avatar = shared_path("media", "avatars", "mona.jpg")
    boxes = {}
    for mirror in (False, True):
        records, on_frame = _collect()
        extra = ["--mirror"] if mirror else []
        run(_options(tiny_golden, avatar, driving, "--output", str(tmp_path / str(mirror)),
                     *extra), on_frame=on_frame)  # fmt: skip
        boxes[mirror] = records[0].box
    width = frames[0].shape[1]
    plain, mirrored = boxes[False], boxes[True]
    assert plain.center[0] < width / 2 < mirrored.center[0]
    tolerance = 0.03 * plain.size
    assert abs(plain.center[0] - (width - mirrored.center[0])) < tolerance
    assert abs(plain.center[1] - mirrored.center[1]) < tolerance


def test_pause_shows_the_avatar_at_rest(tiny_golden: Golden, tmp_path: Path) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    (avatars / "2-flipped.png").unlink()
    records, collect = _collect()

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        collect(record, loop)
        if record.index in (3, 6):
            loop.post(Action.TOGGLE_PAUSE)

    loop = run(
        _options(tiny_golden, avatars, driving, "--no-crop", "--output", str(tmp_path / "o")),
        on_frame=on_frame,
    )
    statuses = [r.status for r in records]
    assert statuses[4:7] == ["paused: showing the avatar at rest"] * 3
    assert statuses[7] == "ok" and statuses[3] == "ok"
    rest = cv2.cvtColor(_as_output(loop.animator.rest_image), cv2.COLOR_RGB2BGR).astype(int)
    assert np.array_equal(cv2.imread(str(tmp_path / "o" / "000005.png")).astype(int), rest)


def test_ctrl_c_releases_camera_and_virtual_camera(tiny_golden: Golden, tmp_path: Path) -> None:
    avatars, driving = _tiny_inputs(tiny_golden, tmp_path)
    cameras: list[FakeCamera] = []
    seen: dict[str, object] = {}

    def factory(width, height, fps, device):
        cameras.append(FakeCamera(width, height, fps, device))
        return cameras[-1]

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        seen["source"] = loop.grabber.source
        if record.index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(
            _options(tiny_golden, avatars, driving, "--no-crop", "--virtual-cam"),
            on_frame=on_frame,
            camera_factory=factory,
        )
    assert cameras[0].closed
    assert seen["source"].closed
    assert len(cameras[0].frames) >= 4  # frames 0-3 (and any idle re-sends)


# --- buffer ownership: a slow engine behind a fast camera ---------------------------------


class SlowAnimator:
    """Stands in for live.animator.Animator: takes ``delay`` seconds per frame, like a slow
    engine, and outputs its driving crop, so each output encodes the camera frame it came from.
    Records the frame each crop encodes and whether the crop changed while it was animated."""

    def __init__(self, resolution: int, delay: float) -> None:
        self.resolution = resolution
        self.delay = delay
        self.avatar_keypoints = KeypointArrays(
            np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]), None
        )
        self.rest_image = np.zeros((resolution, resolution, 3), np.uint8)
        self.round_trip_ms = None  # a local engine: no server round trip
        self.engine = None  # like Animator.engine; a local engine without a status line
        self.motion = MotionOptions()
        self.animated: list[int] = []  # frame encoded in each crop, at the start of animate()
        self.changed: list[int] = []  # frames whose crop was overwritten during animate()

    def set_avatar(self, image: np.ndarray) -> None:
        self.rest_image = image.copy()

    def reset_calibration(self) -> None:
        pass

    def animate(
        self, crop: np.ndarray, out: np.ndarray | None = None, pts: float | None = None
    ) -> AnimatedFrame:
        before = crop.copy()
        self.animated.append(decode_index(before))
        time.sleep(self.delay)
        if not np.array_equal(crop, before):
            self.changed.append(self.animated[-1])
        out = np.empty_like(crop) if out is None else out
        out[...] = crop
        return AnimatedFrame(out, self.avatar_keypoints)


class RecordingPreview:
    """Stands in for live.preview.PreviewWindow: decodes what each show() call displays."""

    def __init__(self) -> None:
        self.overlay = False
        self.show_stats = False
        self.closed = False
        # (camera frame shown, avatar frame shown, blue band on the right = mirrored, status)
        self.shown: list[tuple[int, int | None, bool, str]] = []

    def show(self, camera, avatar, box, stats, status) -> None:
        width = camera.shape[1]
        mirrored = bool(camera[:, -1, 2].min() == 255 and camera[:, 0, 2].max() == 0)
        avatar_index = None if avatar is None else decode_index(avatar)
        self.shown.append((decode_index(camera), avatar_index, mirrored, status))
        assert width == 64


def test_slow_engine_animates_shows_and_sends_the_same_camera_frame() -> None:
    """A 30 fps camera, 100 ms inference, mirror on: the camera stage laps the engine, yet
    each animated frame is the one shown in the preview and sent to the virtual camera, and
    its crop is not overwritten while it is animated."""
    resolution = 16
    animator = SlowAnimator(resolution, delay=0.1)
    preview = RecordingPreview()
    cameras: list[FakeCamera] = []

    def factory(width, height, fps, device):
        cameras.append(FakeCamera(width, height, fps, device))
        return cameras[-1]

    checks: list[tuple[int, int, int, int | None, int, bool]] = []

    def on_frame(record: FrameRecord, loop: LiveLoop) -> None:
        camera_shown, avatar_shown, mirrored, _ = preview.shown[-1]
        sent = decode_index(cameras[0].frames[-1])
        checks.append(
            (record.index, animator.animated[-1], camera_shown, avatar_shown, sent, mirrored)
        )

    grabber = LatestFrameGrabber(IndexedSource(45), mode="paced", fps=30.0)
    avatar = PreparedAvatar("avatar", np.full((resolution, resolution, 3), 7, np.uint8), True)
    with VirtualCamera(
        VirtualCameraConfig(width=64, height=48, fps=30.0), camera_factory=factory
    ) as virtual_camera:
        loop = LiveLoop(
            grabber,
            ResizeCropper(resolution),
            animator,  # type: ignore[arg-type]
            [avatar],
            LoopOptions(mirror=True, show_stats=False),
            virtual_camera=virtual_camera,
            preview=preview,  # type: ignore[arg-type]
            on_frame=on_frame,
        )
        loop.run()
    assert len(checks) >= 8
    assert loop.dropped > 0  # the camera really was faster than the engine
    for index, animated, camera_shown, avatar_shown, sent, mirrored in checks:
        assert (animated, camera_shown, avatar_shown, sent) == (index,) * 4, checks
        assert mirrored
    assert animator.changed == []
    # Buffers are reused, not allocated per frame: at most four of each kind are in flight
    # (being framed, waiting, being animated, last shown).
    assert loop.buffers_allocated <= 8 < len(checks) + loop.dropped
    # Idle refreshes of the preview show the last animated camera frame, not a newer one.
    shown_in_order = [entry for entry in preview.shown if entry[1] is not None]
    for camera_shown, avatar_shown, _, status in shown_in_order:
        assert camera_shown == avatar_shown, (status, camera_shown, avatar_shown)
