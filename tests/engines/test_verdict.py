"""Measure once, cache the verdict (engines.verdict), and the backend race that uses it: a
ranking where a backend failed is not kept, --remeasure measures again."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import race
from engines.cache import ArtifactCache
from engines.verdict import measured_once
from export.config import load_config
from export.iospec import model_io
from tests.conftest import Golden


def test_measured_once_then_read_and_remeasured_on_request(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    calls: list[int] = []

    def measure() -> dict:
        calls.append(1)
        return {"n": len(calls)}

    first = measured_once(cache, "k", "label", {"a": 1}, measure, "m")
    second = measured_once(cache, "k", "label", {"a": 1}, measure, "m")
    assert (first.result, first.cached, second.result, second.cached) == (
        {"n": 1},
        False,
        {"n": 1},
        True,
    )
    other_key = measured_once(cache, "k", "label", {"a": 2}, measure, "m")
    assert other_key.result == {"n": 2}
    again = measured_once(cache, "k", "label", {"a": 1}, measure, "m", remeasure=True)
    assert again.result == {"n": 3} and not again.cached
    assert measured_once(cache, "k", "label", {"a": 1}, measure, "m").result == {"n": 3}


def test_a_refused_result_is_used_once_and_not_kept(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    results = iter([{"ok": False}, {"ok": True}, {"ok": None}])

    def keep(result: dict) -> bool:
        return bool(result["ok"])

    def measure() -> dict:
        return next(results)

    assert measured_once(cache, "k", "l", {}, measure, "m", keep=keep).result == {"ok": False}
    assert measured_once(cache, "k", "l", {}, measure, "m", keep=keep).result == {"ok": True}
    kept = measured_once(cache, "k", "l", {}, measure, "m", keep=keep)
    assert kept.cached and kept.result == {"ok": True}


def test_a_backend_that_failed_once_is_not_ranked_last_for_ever(
    tiny_golden: Golden, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = model_io(load_config(tiny_golden.config, resolution=64))
    runs = iter(
        [
            ({"onnxruntime": 10.0}, {"openvino": "RuntimeError: busy"}),
            ({"onnxruntime": 10.0, "openvino": 5.0}, {}),
        ]
    )
    monkeypatch.setattr(race, "measure", lambda backends, start, io: next(runs))
    cache = ArtifactCache(tmp_path)
    args = (cache, {"k": 1}, ["openvino", "onnxruntime"], None, io, "cpu")
    first = race.cpu_ranking(*args)
    assert first.order == ("onnxruntime", "openvino") and first.failed
    second = race.cpu_ranking(*args)  # measured again: the failed ranking was not kept
    assert second.order == ("openvino", "onnxruntime") and not second.cached
    assert race.cpu_ranking(*args).cached
