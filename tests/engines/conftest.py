"""Fixtures shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One engine cache for the whole session: each golden's ONNX files are exported once and
    reused by every test that does not test the cache itself."""
    return tmp_path_factory.mktemp("engine-cache")
