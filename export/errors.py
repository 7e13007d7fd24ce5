"""User-facing errors.

Every error a user can cause (a bad path, a wrong file, a missing package) is raised as a
subclass of :class:`UserError`. Its message says what happened, what was expected and what to
do; the command line prints it without a traceback and exits with :attr:`UserError.exit_code`.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input or the environment, with an actionable message."""

    exit_code = 2


class ConfigError(UserError):
    """A model config that cannot be found, parsed or used."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the config."""


class MissingDependencyError(UserError):
    """An optional package is not installed; the message names the pip extra to install."""

    exit_code = 3


def missing_dependency(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error for an optional ``module`` that failed to import.

    ``extra`` is the pip extra of this project that installs it and ``purpose`` says what
    needs it, e.g. ``missing_dependency("onnxruntime", "cpu", "the onnxruntime backend")``.
    """
    return MissingDependencyError(
        f"{purpose} needs the Python package '{module}', which is not installed.\n"
        f"Install it with:  pip install 'avatarcam[{extra}]'   (or: pip install -e '.[{extra}]' "
        "in a checkout)"
    )
