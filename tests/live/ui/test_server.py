"""The control page's server over real HTTP on 127.0.0.1: token, Origin, actions posted to the
loop, body bounds, a port in use."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the ui extra (pip install -e '.[ui]') is not installed")

from live.controls import Action
from live.errors import SettingError
from live.framing import FramingConfig
from live.marking import MarkingOptions
from live.pipeline import PreparedAvatar
from live.ui.api import RunInfo
from live.ui.options import UiOptions
from live.ui.server import UiServer, _bind, serve_ui


class _Loop:
    """What the API reads from and posts to a live loop, recording the posts."""

    def __init__(self) -> None:
        image = np.zeros((64, 64, 3), np.uint8)
        self.avatars = [PreparedAvatar("a.png", image, True), PreparedAvatar("b.png", image, True)]
        self.avatar_index = 0
        self.paused = self.mirror = self.best_frame = False
        self.motion_scale = 1.0
        self.motion_smoothing = 0.0
        self.grabber = SimpleNamespace(status="ok")
        self.animator = SimpleNamespace(calibrated=True)
        self.outputs: list = []
        self.posted: list[tuple[Action, object]] = []

    def post(self, action: Action, value: object = None) -> None:
        self.posted.append((action, value))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[UiServer, _Loop]]:
    loop = _Loop()
    info = RunInfo(
        engine={"backend": "torch", "precision": "fp32", "device": "cpu"},
        camera={"name": "clip.mp4", "size": [64, 64], "fps": 10.0, "live": False},
        virtual_camera=None,
        avatar_folder=tmp_path,
        resolution=64,
        crop=True,
        framing=FramingConfig(),
        marking=MarkingOptions(),
        engine_marks=False,
    )
    options = UiOptions(port=0, open_browser=False)
    with serve_ui(options, loop, info, (128, 72), "letterbox") as running:  # type: ignore[arg-type]
        assert loop.outputs == [running.bridge]  # the page's output joined the loop
        yield running, loop


def _call(server: UiServer, method: str, path: str, body: bytes = b"", **headers: str):
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_state_needs_the_token(server) -> None:
    running, _ = server
    assert running.url.startswith("http://127.0.0.1:") and "?token=" in running.url
    assert _call(running, "GET", "/api/state")[0] == 403
    assert _call(running, "GET", "/")[0] == 403
    status, body = _call(running, "GET", f"/api/state?token={running.token}")
    state = json.loads(body)
    assert status == 200 and [a["name"] for a in state["avatars"]] == ["a.png", "b.png"]
    assert state["engine"]["backend"] == "torch" and state["keys"]["recalibrate"] == "c"


def test_actions_reach_the_loop_only_from_the_page(server) -> None:
    running, loop = server
    token = {"X-Avatarcam-Token": running.token}
    own = {"Origin": f"http://127.0.0.1:{running.port}", **token}
    assert (
        _call(running, "POST", "/api/calibrate", **{"Origin": "http://evil.example", **token})[0]
        == 403
    )
    assert _call(running, "POST", "/api/calibrate")[0] == 403  # no token
    assert loop.posted == []
    assert _call(running, "POST", "/api/calibrate", **own)[0] == 200
    assert _call(running, "POST", "/api/avatar", b'{"index": 1}', **own)[0] == 200
    assert _call(running, "POST", "/api/avatar", b'{"index": 2}', **own)[0] == 400
    assert _call(running, "POST", "/api/avatar", b"{nope", **own)[0] == 400
    assert _call(running, "POST", "/api/pause", b'{"on": false}', **own)[0] == 200  # already
    assert _call(running, "POST", "/api/motion", b'{"scale": 1.5}', **token)[0] == 200
    assert _call(running, "POST", "/api/motion", b'{"smoothing": 0.5}', **own)[0] == 200
    for bad in (b'{"smoothing": 1.5}', b'{"smoothing": true}', b'{"speed": 1}', b"{}"):
        assert _call(running, "POST", "/api/motion", bad, **own)[0] == 400
    assert _call(running, "POST", "/api/label", b'{"text": "' + b"x" * 60 + b'"}', **own)[0] == 400
    assert loop.posted == [
        (Action.RECALIBRATE, None),
        (Action.SELECT_AVATAR, 1),
        (Action.SET_MOTION_SCALE, 1.5),
        (Action.SET_MOTION_SMOOTHING, 0.5),
    ]
    assert _call(running, "POST", "/api/label", b'{"text": "AI"}', **own)[0] == 200
    assert loop.posted[-1][0] is Action.SET_MARKER


def test_bodies_are_bounded_before_they_are_read(server, tmp_path: Path) -> None:
    running, loop = server
    parts = urlsplit(running.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:  # announce 1 GiB, send nothing: refused at once, from the header
        connection.putrequest("POST", "/api/upload?name=big.jpg")
        connection.putheader("X-Avatarcam-Token", running.token)
        connection.putheader("Content-Length", str(1 << 30))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and b"larger than 20 MiB" in response.read()
    finally:
        connection.close()
    status, _ = _call(
        running, "POST", "/api/motion", b" " * 5000, **{"X-Avatarcam-Token": running.token}
    )
    assert status == 413
    assert loop.posted == [] and list(tmp_path.iterdir()) == []


def test_a_port_in_use_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(SettingError, match=r"--ui-port \d+ is in use"):
            _bind(UiOptions(port=taken.getsockname()[1]))
    finally:
        taken.close()
