"""A replica's logic without Ray: batches of different avatars, padding, and the session's
state machine (order, token, capacity), on the tiny golden model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from engines.frames import image_to_input
from engines.serve.identity import io_from_json, io_to_json
from engines.serve.protocol import (
    ErrorCode,
    MessageType,
    PartSpec,
    ProtocolError,
    decode,
    encode,
)
from engines.serve.runner import BatchRunner, FrameJob, finalize_frame
from engines.serve.session import Session
from engines.serve.settings import ServerSettings
from export.motion import relative_motion
from tests.conftest import load_golden


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255).astype(np.uint8)


def test_batch_sizes_are_powers_of_two_and_the_maximum() -> None:
    settings = ServerSettings(checkpoint=Path("x"), max_batch=6)
    assert settings.batch_sizes() == (1, 2, 4, 6)
    assert ServerSettings(checkpoint=Path("x"), max_batch=1).batch_sizes() == (1,)


def test_io_spec_survives_json(runner: BatchRunner) -> None:
    assert io_from_json(io_to_json(runner.io)) == runner.io


def test_different_avatars_in_one_padded_batch_match_single_calls(runner: BatchRunner) -> None:
    golden = load_golden("tiny64")
    avatars = [_uint8(golden.arrays["source"]), _uint8(golden.arrays["driving"][5])]
    avatars.append(avatars[0][:, ::-1].copy())
    states = [runner.encode_avatar(a) for a in avatars]
    # A relative motion for the second session: its own reference frame.
    ref = runner.encode_avatar(_uint8(golden.arrays["driving"][0])).avatar
    kp = states[1].avatar
    motion = relative_motion(
        kp["avatar_kp"], kp["avatar_jacobian"], ref["avatar_kp"], ref["avatar_jacobian"]
    )
    states[1].motion = {
        "motion_scale": motion.scale,
        "motion_offset": motion.offset,
        "motion_jacobian": motion.jacobian,
        "motion_jacobian_offset": motion.jacobian_offset,
    }
    driving = [_uint8(golden.arrays["driving"][i]) for i in (1, 2, 3)]
    jobs = [FrameJob(s, d) for s, d in zip(states, driving, strict=True)]
    before = dict(runner.batches)
    together = runner.animate(jobs)  # 3 frames on the batch-4 engine, one padded row
    assert runner.batches[3] == before.get(3, 0) + 1
    for job, result in zip(jobs, together, strict=True):
        alone = runner.animate([job])[0]
        np.testing.assert_allclose(result.prediction, alone.prediction, atol=1e-5)
        np.testing.assert_allclose(result.driving_kp, alone.driving_kp, atol=1e-5)
    # The sessions really differ: different avatars give different frames.
    assert np.abs(together[0].prediction - together[2].prediction).max() > 0.05
    # And one frame equals the plain engine's session API.
    engine = runner.engines[1]
    engine.set_avatar(image_to_input(avatars[0]))
    local = engine.animate(image_to_input(driving[0]))
    np.testing.assert_allclose(together[0].prediction, local.prediction, atol=1e-5)


def _run(session: Session, data: bytes) -> bytes | None:
    return asyncio.run(session.handle(data))


def _session(runner: BatchRunner, token: str | None = None, admit=lambda: None) -> Session:
    async def animate(job: FrameJob):
        return runner.animate([job])[0]

    return Session(runner, token, animate, admit, "test")


def _hello(**meta) -> bytes:
    return encode(MessageType.HELLO, {"transport": "png", **meta})


def test_session_happy_path_returns_finalized_frames(runner: BatchRunner) -> None:
    golden = load_golden("tiny64")
    session = _session(runner)
    welcome = decode(_run(session, _hello()), {})
    assert welcome.type is MessageType.WELCOME
    assert welcome.meta["model"]["resolution"] == 64
    avatar = _uint8(golden.arrays["source"])
    reply = decode(
        _run(session, encode(MessageType.AVATAR, images={"avatar": (avatar, "png")})),
        {"avatar_kp": PartSpec((1, 5, 2)), "avatar_jacobian": PartSpec((1, 5, 2, 2))},
    )
    assert reply.type is MessageType.AVATAR_STATE
    driving = _uint8(golden.arrays["driving"][2])
    spec = {
        "prediction": PartSpec((64, 64, 3), "uint8", image=True),
        "driving_kp": PartSpec((1, 5, 2)),
        "driving_jacobian": PartSpec((1, 5, 2, 2)),
    }
    result = decode(
        _run(session, encode(MessageType.FRAME, images={"driving": (driving, "png")}, seq=0)),
        spec,
    )
    assert result.seq == 0
    expected = runner.animate([FrameJob(runner.encode_avatar(avatar), driving)])[0]
    np.testing.assert_array_equal(result.parts["prediction"], finalize_frame(expected.prediction))
    np.testing.assert_allclose(result.parts["driving_kp"], expected.driving_kp, atol=1e-5)


def _expect(session: Session, data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        _run(session, data)
    assert info.value.code is code, info.value.message


def test_session_rejects_out_of_order_messages(runner: BatchRunner) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    frame = encode(MessageType.FRAME, images={"driving": (image, "raw")}, seq=0)
    avatar = encode(MessageType.AVATAR, images={"avatar": (image, "raw")})
    _expect(_session(runner), frame, ErrorCode.ORDER)  # before HELLO
    session = _session(runner)
    _run(session, _hello())
    _expect(session, _hello(), ErrorCode.ORDER)  # HELLO twice
    _expect(session, frame, ErrorCode.ORDER)  # before AVATAR
    _run(session, avatar)
    _run(session, frame)
    _expect(session, frame, ErrorCode.ORDER)  # seq 0 again
    _expect(session, encode(MessageType.RESULT), ErrorCode.ORDER)  # a server message
    small = np.zeros((32, 32, 3), np.uint8)
    bad = encode(MessageType.FRAME, images={"driving": (small, "raw")}, seq=1)
    _expect(session, bad, ErrorCode.SHAPE)
    nan = np.full((1, 5, 1), np.nan, np.float32)
    motion = encode(
        MessageType.MOTION,
        arrays={
            "motion_scale": nan,
            "motion_offset": np.zeros((1, 5, 2), np.float32),
            "motion_jacobian": np.zeros((1, 5, 2, 2), np.float32),
            "motion_jacobian_offset": np.zeros((1, 5, 2, 2), np.float32),
        },
    )
    _expect(session, motion, ErrorCode.MALFORMED)


def test_session_checks_token_transport_and_capacity(runner: BatchRunner) -> None:
    _expect(_session(runner, token="s3cret"), _hello(), ErrorCode.UNAUTHORIZED)
    _expect(_session(runner, token="s3cret"), _hello(token="wrong"), ErrorCode.UNAUTHORIZED)
    assert _run(_session(runner, token="s3cret"), _hello(token="s3cret")) is not None
    _expect(_session(runner), _hello(transport="webp"), ErrorCode.MALFORMED)
    _expect(_session(runner), _hello(jpeg_quality=0), ErrorCode.MALFORMED)

    def full() -> None:
        raise ProtocolError(ErrorCode.FULL, "the server is full")

    _expect(_session(runner, admit=full), _hello(), ErrorCode.FULL)


@pytest.mark.parametrize(
    ("host", "loopback", "url"),
    [
        ("127.0.0.1", True, "ws://127.0.0.1:8765"),
        ("localhost", True, "ws://localhost:8765"),
        ("::1", True, "ws://[::1]:8765"),
        ("0.0.0.0", False, "ws://127.0.0.1:8765"),
        ("192.168.1.5", False, "ws://192.168.1.5:8765"),
    ],
)
def test_bind_addresses_beyond_loopback_are_recognised(host: str, loopback: bool, url: str) -> None:
    settings = ServerSettings(checkpoint=Path("x"), host=host)
    assert settings.loopback is loopback  # beyond loopback without --token: a warning
    assert settings.url == url


def test_avatars_are_rate_limited_and_frames_mark_the_session_active(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines.serve import session as session_module

    clock = [1000.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: clock[0])
    session = _session(runner)
    _run(session, _hello(transport="raw"))
    avatar = _uint8(load_golden("tiny64").arrays["source"])
    message = encode(MessageType.AVATAR, images={"avatar": (avatar, "raw")})
    for _ in range(session_module.AVATAR_BURST):
        assert _run(session, message)[5] == MessageType.AVATAR_STATE
    _expect(session, message, ErrorCode.RATE)
    clock[0] += session_module.AVATAR_EVERY_S  # one more is allowed after the refill time
    assert _run(session, message)[5] == MessageType.AVATAR_STATE
    _expect(session, message, ErrorCode.RATE)
    assert session.last_frame == float("-inf")
    driving = _uint8(load_golden("tiny64").arrays["driving"][0])
    _run(session, encode(MessageType.FRAME, images={"driving": (driving, "raw")}))
    assert session.last_frame == clock[0]
