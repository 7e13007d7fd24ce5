"""Fixtures of the server tests: a replica's runner on the tiny golden model, without Ray."""

from __future__ import annotations

import pytest

from engines.serve.runner import BatchRunner
from engines.serve.settings import ServerSettings
from engines.torch_engine import TorchEngine
from export.checkpoint import load_model
from export.config import load_config
from export.iospec import model_io
from tests.conftest import load_golden


@pytest.fixture(scope="module")
def runner() -> BatchRunner:
    """Torch engines for batches of 1, 2 and 4 sharing one tiny64 model."""
    golden = load_golden("tiny64")
    config = load_config(str(golden.config), golden.resolution)
    model = load_model(golden.checkpoint, config)
    settings = ServerSettings(
        checkpoint=golden.checkpoint, config=str(golden.config), resolution=64, max_batch=4
    )
    engines = {b: TorchEngine(model, model_io(config, 64, b)) for b in settings.batch_sizes()}
    return BatchRunner(settings, engines)


@pytest.fixture(scope="session")
def server():
    """The avatar server on Ray Serve (tests/engines/serve/ray_server.py), one per test run:
    test_attacks.py and test_server.py share it; test_server.py's last test stops it."""
    pytest.importorskip("ray.serve", reason="needs the serve extra: pip install -e '.[serve]'")
    pytest.importorskip("websockets", reason="needs the serve extra: pip install -e '.[serve]'")
    from tests.engines.serve.ray_server import serve

    yield from serve()
