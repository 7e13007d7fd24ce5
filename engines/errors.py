"""Engine errors."""

from __future__ import annotations

from export.errors import UserError


class EngineError(UserError):
    """An engine could not be created or was used wrongly; the message says what to do."""


class EngineUsageError(RuntimeError):
    """The engine API was called out of order (e.g. ``animate()`` before ``set_avatar()``, or
    after ``close()``): a mistake in the calling code, not something a user can fix."""


class EngineWarning(UserWarning):
    """An engine runs, but not as asked (a provider or mode fell back); the message says why
    and what fixes it."""


class EngineUnavailable(EngineError):
    """The engine cannot animate right now but may recover (a remote server reconnecting);
    the message is a short status to show. The live loop keeps running."""
