"""Threads on a shared machine: OMP_WAIT_POLICY=PASSIVE in every entry point (unless the user
set it) and the intra-op thread policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from export import threads
from tests.conftest import ROOT

# Each entry point's first import, then torch: what OpenMP sees when torch loads.
ENTRY_POINTS = {
    "run_live.py": "import runpy, sys; sys.argv = ['run_live.py', '--help']; "
    "runpy.run_path('run_live.py', run_name='not_main')",
    "avatarcam / live.cli": "import live.cli",
    "python -m export": "import export.__main__",
    "python -m benchmarks": "import benchmarks.__main__",
}
PROBE = "; import torch, os; print('POLICY', os.environ.get('OMP_WAIT_POLICY'))"


def _policy(code: str, env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    done = subprocess.run(
        [sys.executable, "-c", code + PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stdout.splitlines() if x.startswith("POLICY")][-1]
    return line.split(" ", 1)[1]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_points_make_openmp_wait_passively(entry: str) -> None:
    assert _policy(ENTRY_POINTS[entry], None) == "PASSIVE"


def test_the_users_policy_is_kept() -> None:
    assert _policy(ENTRY_POINTS["avatarcam / live.cli"], "ACTIVE") == "ACTIVE"


def test_passive_openmp_is_too_late_after_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch  # noqa: F401  (loaded: the policy can no longer take effect)

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.passive_openmp() is False
    assert "OMP_WAIT_POLICY" not in os.environ


def test_inference_threads_leave_a_core_on_larger_machines() -> None:
    assert threads.inference_threads(1) == 1
    assert threads.inference_threads(2) == 2  # halving a 2-core laptop's speed costs too much
    assert threads.inference_threads(3) == 3
    assert threads.inference_threads(4) == 3
    assert threads.inference_threads(16) == 15
    assert 1 <= threads.inference_threads() <= threads.physical_cores()
