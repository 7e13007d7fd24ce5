"""Errors of the benchmark command, printed without a traceback."""

from __future__ import annotations

from export.errors import UserError


class BenchmarkError(UserError):
    """A benchmark argument, input file or results file that cannot be used."""
