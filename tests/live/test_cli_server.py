"""The --server flags of run_live.py map onto the remote backend's options."""

from __future__ import annotations

import pytest

from engines.options import RemoteOptions
from live.cli import build_parser, options_from_args
from live.errors import SettingError


def _options(*flags: str):
    return options_from_args(build_parser().parse_args(["--avatar", "a.png", *flags]))


def test_server_flags_select_the_remote_backend() -> None:
    engine = _options(
        "--server",
        "ws://gpu:8765",
        "--server-token",
        "t",
        "--transport",
        "jpeg",
        "--jpeg-quality",
        "70",
    ).engine
    assert engine.backend == "remote"
    assert engine.server == RemoteOptions("ws://gpu:8765", "t", "jpeg", 70)
    assert _options("--server", "ws://gpu:8765").engine.server.transport == "png"
    assert _options().engine.server is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--backend", "remote"), "needs --server"),
        (("--server", "ws://x:1", "--backend", "torch"), "drop --backend torch"),
        (("--server", "ws://x:1", "--jpeg-quality", "0"), "1 to 100"),
    ],
)
def test_conflicting_server_flags_are_refused(flags, message) -> None:
    with pytest.raises(SettingError, match=message):
        _options(*flags)
