"""``python -m engines.serve`` flags without starting Ray: the token's three sources and the
bounds' validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.serve.server import TOKEN_VARIABLE, build_parser, settings_from_args
from export.errors import UserError
from tests.conftest import load_golden


def _settings(*flags: str):
    golden = load_golden("tiny64")
    return settings_from_args(
        build_parser().parse_args(["--checkpoint", str(golden.checkpoint), *flags])
    )


def test_the_token_comes_from_the_flag_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    assert _settings().token is None
    monkeypatch.setenv(TOKEN_VARIABLE, "from-env")
    assert _settings().token == "from-env"
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert _settings("--token-file", str(secret)).token == "from-file"
    assert _settings("--token", "flag").token == "flag"
    with pytest.raises(UserError, match="not both"):
        _settings("--token", "flag", "--token-file", str(secret))
    with pytest.raises(UserError, match="cannot read"):
        _settings("--token-file", str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        _settings("--token-file", str(tmp_path / "empty"))


def test_bounds_are_validated_and_reach_the_settings() -> None:
    settings = _settings(
        *("--max-sessions-per-client", "3", "--idle-timeout", "9", "--hello-timeout", "2"),
        *("--engine-timeout", "7", "--gpus-per-replica", "0.5"),
    )
    assert (settings.max_sessions_per_client, settings.idle_timeout_s) == (3, 9.0)
    assert (settings.hello_timeout_s, settings.engine_timeout_s) == (2.0, 7.0)
    assert settings.gpus_per_replica == 0.5
    for flags in (
        ("--max-sessions-per-client", "0"),
        ("--idle-timeout", "0"),
        ("--engine-timeout", "-1"),
        ("--gpus-per-replica", "-1"),
    ):
        with pytest.raises(UserError, match=flags[0]):
            _settings(*flags)
