"""--ui flags map onto UiOptions; bad ports and hosts are refused; loopback is recognised."""

from __future__ import annotations

import pytest

from live.cli import build_parser, options_from_args
from live.errors import SettingError
from live.ui.options import DEFAULT_PORT, UiOptions


def _ui(*flags: str) -> UiOptions | None:
    return options_from_args(build_parser().parse_args(["--avatar", "a.jpg", *flags])).ui


def test_flags_map_onto_ui_options() -> None:
    assert _ui() is None
    assert _ui("--ui") == UiOptions(host="127.0.0.1", port=DEFAULT_PORT, open_browser=True)
    assert DEFAULT_PORT == 8770
    options = _ui("--ui", "--ui-port", "9000", "--no-browser", "--ui-host", "0.0.0.0")
    assert options == UiOptions(host="0.0.0.0", port=9000, open_browser=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("myhost.lan", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert UiOptions(host=host).loopback is loopback


def test_bad_ports_and_hosts_are_refused() -> None:
    with pytest.raises(SettingError, match="--ui-port 70000"):
        _ui("--ui", "--ui-port", "70000")
    with pytest.raises(SettingError, match="--ui-host is empty"):
        UiOptions(host=" ")


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """The page works offline: its files reference no other host (no CDN, no fonts)."""
    from importlib import resources

    static = resources.files("live.ui").joinpath("static")
    names = sorted(entry.name for entry in static.iterdir())
    assert names == ["app.js", "index.html", "obs.html"]
    for name in names:
        text = static.joinpath(name).read_text()
        assert "http:" not in text and "https:" not in text and "//cdn" not in text, name
