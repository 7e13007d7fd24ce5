"""Every output is marked as synthetic: watermark and label on frames, Content Credentials on
files, and ``verify`` reporting both."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.watermark import detect
from live.cli import main
from live.credentials import read_manifest
from live.errors import SettingError
from live.marking import FrameMarker, MarkingOptions
from live.verify import verify_file
from live.virtualcam import fit_frame
from tests.conftest import Golden, shared_path


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A test photo at model resolution."""
    image = cv2.imread(str(shared_path("media", "avatars", "mona.jpg")))
    return cv2.cvtColor(
        cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """The driving clip's frames at model resolution."""
    import av

    with av.open(str(shared_path("media", "driving", "mona-talking.gif"))) as container:
        return [
            cv2.resize(f.to_ndarray(format="rgb24"), (256, 256), interpolation=cv2.INTER_AREA)
            for f in container.decode(video=0)
        ]


def _encode(path: Path | io.BytesIO, frames, fps: int = 25) -> None:
    """An H.264 MP4 at libx264's default quality (CRF 23)."""
    import av

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# --- frames --------------------------------------------------------------------------------


def test_marker_marks_into_its_own_buffer(photo) -> None:
    marker = FrameMarker(MarkingOptions(), 256)
    original = photo.copy()
    first = marker(photo).copy()
    np.testing.assert_array_equal(photo, original)  # the input (e.g. the rest image) is kept
    assert detect(first).marked
    np.testing.assert_array_equal(marker(photo), first)  # never marked twice
    assert cv2.PSNR(photo, first) >= 40


def test_frames_an_engine_marked_are_not_marked_twice(photo) -> None:
    marked = FrameMarker(MarkingOptions(), 256)(photo).copy()
    np.testing.assert_array_equal(
        FrameMarker(MarkingOptions(), 256, engine_marks=True)(marked), marked
    )


def test_no_watermark_leaves_frames_as_they_are(photo) -> None:
    marker = FrameMarker(MarkingOptions(watermark=False), 256)
    assert not marker.active
    np.testing.assert_array_equal(marker(photo), photo)
    assert not detect(marker(photo)).marked


def test_label_sits_in_the_bottom_left_corner(photo) -> None:
    labelled = FrameMarker(MarkingOptions(watermark=False, label="AI-generated"), 256)(photo)
    changed = np.any(labelled != photo, axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() > 256 * 0.8 and cols.min() < 256 * 0.1 and cols.max() < 256 * 0.75
    assert rows.max() - rows.min() >= 256 * 0.075  # text 19 px high: legible at 720p calls
    box = labelled[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert (box.min(axis=2) >= 240).sum() > 100  # white text ...
    assert np.median(box) < np.median(photo[rows.min() :, : cols.max()])  # ... on a dark box
    both = FrameMarker(MarkingOptions(label="AI-generated"), 256)(photo)
    assert detect(both).marked


@pytest.mark.parametrize(
    "options",
    [
        {"label": ""},
        {"label": "x" * 41},
        {"label": "two\nlines"},
        {"c2pa_cert": Path("cert.pem")},
    ],
    ids=["empty-label", "long-label", "two-line-label", "cert-without-key"],
)
def test_bad_marking_options(options) -> None:
    with pytest.raises(SettingError, match=r"--label|--c2pa-key"):
        MarkingOptions(**options)


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
def test_found_in_the_virtual_camera_frame_after_h264(clip, fit: str) -> None:
    """The 1280x720 frame the virtual camera sends, as a video call encodes it."""
    import av

    marker = FrameMarker(MarkingOptions(), 256)
    composed = [fit_frame(marker(frame), 1280, 720, fit) for frame in clip[:6]]
    buffer = io.BytesIO()
    _encode(buffer, composed)
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    results = [detect(frame) for frame in decoded]
    assert all(r.marked and r.layout == fit for r in results), results
    assert not any(detect(fit_frame(frame, 1280, 720, fit)).marked for frame in clip[:6])


def test_found_in_a_two_second_clip_cut_from_a_recording(clip, tmp_path: Path) -> None:
    import av

    marker = FrameMarker(MarkingOptions(), 256)
    recording = tmp_path / "recording.mp4"
    frames = [marker(clip[i % len(clip)]).copy() for i in range(150)]  # 6 s at 25 fps
    _encode(recording, frames)
    cut = []
    with av.open(str(recording)) as container:
        for frame in container.decode(video=0):
            if 2.0 <= frame.time < 4.0:
                cut.append(frame.to_ndarray(format="rgb24"))
    assert len(cut) == 50
    _encode(tmp_path / "cut.mp4", cut)
    report = verify_file(tmp_path / "cut.mp4")
    assert report.marked and report.frames == 50 and report.marked_frames >= 45, report
    _encode(tmp_path / "plain.mp4", clip[:50])
    assert verify_file(tmp_path / "plain.mp4").marked_frames == 0


# --- the command: offline outputs and verify ----------------------------------------------


def _write_inputs(golden: Golden, folder: Path, frames: int) -> tuple[Path, Path]:
    """The golden's avatar as a PNG and its first ``frames`` driving frames as a PNG folder."""

    def png(path: Path, image: np.ndarray) -> None:
        cv2.imwrite(str(path), np.round(image[..., ::-1] * 255).astype(np.uint8))

    avatar = folder / "avatar.png"
    png(avatar, golden.arrays["source"])
    driving = folder / "driving"
    driving.mkdir()
    for i, frame in enumerate(golden.arrays["driving"][:frames]):
        png(driving / f"{i}.png", frame)
    return avatar, driving


@pytest.fixture
def tiny_run(tiny_golden: Golden, tmp_path: Path, monkeypatch):
    """Runs the command on the tiny golden (2 frames) with a fresh avatarcam home."""
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    avatar, driving = _write_inputs(tiny_golden, tmp_path, frames=2)

    def run(output: Path, *extra: str) -> int:
        return main(
            [
                *("--avatar", str(avatar), "--input", str(driving), "--output", str(output)),
                *("--checkpoint", str(tiny_golden.checkpoint), "--config"),
                *(str(tiny_golden.config), "--no-crop", "--backend", "torch", *extra),
            ]
        )

    run.avatar = avatar
    run.frames = 2
    return run


def _actions(manifest: dict) -> list[dict]:
    return [
        action
        for assertion in manifest["assertions"]
        if assertion["label"].startswith("c2pa.actions")
        for action in assertion["data"]["actions"]
    ]


def test_default_png_output_is_marked_and_signed(tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert tiny_run(out) == 0
    files = sorted(out.iterdir())
    assert len(files) == tiny_run.frames
    avatar_hash = hashlib.sha256(tiny_run.avatar.read_bytes()).hexdigest()
    for path in files:
        assert detect(cv2.imread(str(path))[..., ::-1]).marked
        found = read_manifest(path)
        assert found is not None and found["state"] in ("Valid", "Trusted"), found
        (action,) = _actions(found["manifest"])
        assert action["action"] == "c2pa.created"
        assert action["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
        assert action["softwareAgent"]["name"] == "avatarcam"
        assert action["parameters"]["avatarcam.avatar_sha256"] == [avatar_hash]
    assert (tmp_path / "home" / "credentials" / "c2pa-key.pem").stat().st_mode & 0o077 == 0
    assert main(["verify", str(out)]) == 0  # a folder: every image in it


def test_video_output_verifies(tiny_run, tmp_path: Path, capsys) -> None:
    video = tmp_path / "out.mp4"
    assert tiny_run(video) == 0
    capsys.readouterr()
    assert main(["verify", str(video)]) == 0
    report = capsys.readouterr().out
    marked = f"carries avatarcam's public disclosure mark (watermark v1) in {tiny_run.frames}/"
    assert marked + f"{tiny_run.frames} frames" in report
    assert "anyone can add or remove this mark" in report and "made by" not in report
    assert (
        "Content Credentials: valid signature, signer not trusted (self-issued certificate"
        in report
    )
    assert "c2pa.created (trainedAlgorithmicMedia)" in report
    capsys.readouterr()
    assert main(["verify", str(video), str(tiny_run.avatar)]) == 1
    assert "avatar.png: no avatarcam disclosure mark" in capsys.readouterr().out
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    capsys.readouterr()
    assert main(["verify", str(video), str(broken)]) == 2
    assert "broken.mp4: unreadable" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing.png")]) == 2


def test_users_own_certificate_and_no_watermark(tiny_run, tmp_path: Path, capsys) -> None:
    from live.credentials import own_identity

    cert, key = own_identity(tmp_path / "mine")
    video = tmp_path / "plain.mp4"
    assert tiny_run(video, "--c2pa-cert", str(cert), "--c2pa-key", str(key), "--no-watermark") == 0
    assert "the invisible watermark is off" in capsys.readouterr().err
    assert not (tmp_path / "home" / "credentials").exists()  # the user's key was used
    # Still signed, saying there is no watermark; verify reports it as not marked.
    found = read_manifest(video)
    assert found["state"] in ("Valid", "Trusted")
    synthesis = next(
        a for a in found["manifest"]["assertions"] if a["label"] == "avatarcam.synthesis"
    )
    assert synthesis["data"]["watermark"].startswith("none")
    assert main(["verify", str(video)]) == 1
    # A key that does not belong to the certificate fails before any frame is written.
    _, wrong_key = own_identity(tmp_path / "other")
    capsys.readouterr()
    failed = tmp_path / "failed.mp4"
    assert tiny_run(failed, "--c2pa-cert", str(cert), "--c2pa-key", str(wrong_key)) == 2
    assert "does not belong to the first certificate" in capsys.readouterr().err
    assert not failed.exists()


def test_virtual_camera_frames_are_marked(tiny_golden: Golden, tmp_path: Path) -> None:
    from live.app import run
    from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions

    avatar = tmp_path / "avatar.png"
    cv2.imwrite(
        str(avatar), np.round(tiny_golden.arrays["source"][..., ::-1] * 255).astype(np.uint8)
    )
    sent: list[np.ndarray] = []
    stages: list[dict] = []

    class Camera:
        device, fps = "fake", 25.0

        def __init__(self, width, height, fps, device):
            self.width, self.height = width, height

        def send(self, frame):
            sent.append(frame.copy())

        def sleep_until_next_frame(self):
            pass

        def close(self):
            pass

    driving = tmp_path / "driving"
    driving.mkdir()
    for i, frame in enumerate(tiny_golden.arrays["driving"][:2]):
        cv2.imwrite(str(driving / f"{i}.png"), np.round(frame[..., ::-1] * 255).astype(np.uint8))
    options = RunOptions(
        avatar=avatar,
        capture=CaptureOptions(input=str(driving)),
        output=OutputOptions(virtual_camera=True, preview=False),
        crop=False,
        model=ModelOptions(checkpoint=tiny_golden.checkpoint, config=str(tiny_golden.config)),
    )
    run(
        options,
        on_frame=lambda record, loop: stages.append(record.stages_ms),
        camera_factory=Camera,
    )
    assert len(sent) >= 2
    assert all(frame.shape == (720, 1280, 3) and detect(frame).marked for frame in sent)
    assert all(s["watermark"] >= 0 for s in stages)


def test_recording_stopped_with_ctrl_c_is_signed(
    tiny_golden: Golden, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    from live.app import run
    from live.options import CaptureOptions, ModelOptions, OutputOptions, RunOptions

    avatar, driving = _write_inputs(tiny_golden, tmp_path, frames=3)
    video = tmp_path / "rec.mp4"
    options = RunOptions(
        avatar=avatar,
        capture=CaptureOptions(input=str(driving)),
        output=OutputOptions(file=video, preview=False),
        crop=False,
        model=ModelOptions(checkpoint=tiny_golden.checkpoint, config=str(tiny_golden.config)),
    )

    def interrupt(record, loop) -> None:
        if record.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(options, on_frame=interrupt)
    report = verify_file(video)
    assert report.marked and report.frames == 2
    assert report.c2pa is not None and report.c2pa["state"] in ("Valid", "Trusted")
