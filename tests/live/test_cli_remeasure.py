"""--remeasure maps onto EngineOptions.remeasure (auto's measurements and remembered failures)."""

from __future__ import annotations

from live.cli import build_parser, options_from_args


def test_remeasure_flag() -> None:
    parse = build_parser().parse_args
    assert options_from_args(parse(["--avatar", "a.png", "--remeasure"])).engine.remeasure
    assert not options_from_args(parse(["--avatar", "a.png"])).engine.remeasure
