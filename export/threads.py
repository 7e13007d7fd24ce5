"""CPU threads that behave on a shared machine.

Two settings, applied by every entry point (``run_live.py``/``avatarcam``, ``python -m export``,
``python -m benchmarks``):

- :func:`passive_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` before PyTorch (and its OpenMP
  runtime) loads, unless the user set it. With the default active policy, idle OpenMP threads
  spin for a while after each parallel region; when another program (or our own capture and
  face-framing threads) needs the cores, eager PyTorch then slows down 5-6x instead of 2x.
  Sleeping threads cost nothing measurable when the machine is idle.
- :func:`inference_threads` is the intra-op thread count every backend uses: one per physical
  core (hyper-threads share a core's vector units), less one core for capture and framing on
  machines with four or more cores. On two cores, giving up a whole core would halve the
  frame rate, so both stay with inference and the waiting policy above shares them.

This module imports neither torch nor any runtime, so it can run first.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: Machines with at least this many physical cores keep one free for capture and framing.
RESERVE_FROM_CORES = 4


def passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; call before ``import
    torch``. Returns True when this call set it (False: the user's value is kept, or torch was
    already loaded and it is too late, which is logged)."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    if "torch" in sys.modules:
        log.debug("OMP_WAIT_POLICY not set: torch was imported before the entry point set it")
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share a core's FPUs)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(allowed))
        cores.add((package, core))
    return max(1, len(cores))


def inference_threads(cores: int | None = None) -> int:
    """Intra-op threads for inference on ``cores`` physical cores (default: this machine's):
    all of them below :data:`RESERVE_FROM_CORES`, else all but one."""
    cores = physical_cores() if cores is None else cores
    if cores >= RESERVE_FROM_CORES:
        return cores - 1
    return max(1, cores)
