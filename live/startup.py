"""What a run checks before the slow engine build, and what it reports after the last frame.

Before: every problem that can be found cheaply (the output would overwrite an input, the input
or camera does not open, the avatar cannot be read, no virtual camera device, no display for an
explicit ``--preview``) is collected and reported at once, so a user fixes them in one go.

After: a file input that ended before the frame count its header announces (a truncated file),
and frames in which no face was found, are reported; when the result is probably not what the
user wanted (no face in any frame, or a truncated input) the run ends with
:class:`IncompleteRun` (exit status 4) after the output is saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

from export.errors import UserError

log = logging.getLogger("avatarcam")

T = TypeVar("T")

#: Exit status of a run that finished and saved its output, with a warning that the output is
#: probably not what was wanted (documented in the README).
INCOMPLETE_EXIT = 4


class StartupError(UserError):
    """Several problems found before the run started, reported together."""

    def __init__(self, problems: list[UserError]):
        self.problems = problems
        self.exit_code = max(problem.exit_code for problem in problems)
        lines = [f"{len(problems)} problems must be fixed before starting:"]
        lines += [f"{n}. {problem}" for n, problem in enumerate(problems, 1)]
        super().__init__("\n".join(lines))


class IncompleteRun(UserError):
    """The run finished and saved its output, but the output is probably not what the user
    wanted (no face in any frame, or the input ended early)."""

    exit_code = INCOMPLETE_EXIT


class Checks:
    """Collects the user errors of start-up steps instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[UserError] = []

    def run(self, step: Callable[[], T]) -> T | None:
        """The step's result, or None when it raised a UserError (kept for :meth:`raise_all`)."""
        try:
            return step()
        except UserError as exc:
            self.problems.append(exc)
            return None

    def enter(self, stack: ExitStack, step: Callable[[], T]) -> T | None:
        """Like :meth:`run` for a context manager, entered on ``stack``."""
        value = self.run(step)
        return stack.enter_context(value) if value is not None else None  # type: ignore[arg-type]

    def raise_all(self) -> None:
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise StartupError(self.problems)


@dataclass
class RunReport:
    """Counts gathered while the loop runs, checked once it ends."""

    expected: int | None  # frames the file input announces (None: unknown, or a camera)
    read: int = 0  # frames that reached the outputs
    no_face: int = 0  # of those, frames in which no face was found
    interrupted: bool = False  # stopped by Ctrl+C

    def count(self, status: str) -> None:
        self.read += 1
        if status.startswith("no face"):
            self.no_face += 1

    def problems(self, input_name: str) -> list[str]:
        """Warnings for a finished file run; the first ones are serious (see IncompleteRun)."""
        if self.interrupted or self.read == 0:
            return []
        found = []
        if self.expected is not None and self.read < self.expected:
            found.append(
                f"the input {input_name} ended after {self.read} of the {self.expected} frames "
                "it announces: the file is probably truncated or damaged (re-export or re-copy "
                "it), so the output is shorter than the input"
            )
        if self.no_face == self.read:
            found.append(
                f"no face was found in any of the {self.read} frames of {input_name}: the output "
                "shows the avatar at rest. Use a video of a face looking at the camera, try a "
                "larger --crop-scale, or pass --no-crop to use whole frames"
            )
        return found

    def finish(self, input_name: str, live: bool) -> None:
        """Log what needs saying; raise IncompleteRun when the output is probably wrong."""
        if live:
            return
        serious = self.problems(input_name)
        if 0 < self.no_face < self.read:
            log.warning(
                "warning: no face was found in %d of %d frames: those show the last animated "
                "frame, or the avatar at rest (--no-face rest)",
                self.no_face,
                self.read,
            )
        if serious:
            raise IncompleteRun("The output was saved, but " + ";\nand ".join(serious) + ".")
