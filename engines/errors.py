"""Engine errors."""

from __future__ import annotations

from export.errors import UserError


class EngineError(UserError):
    """An engine could not be created or was used wrongly; the message says what to do."""


class EngineUnavailable(EngineError):
    """The engine cannot animate right now but may recover (a remote server reconnecting);
    the message is a short status to show. The live loop keeps running."""
