"""Engine errors."""

from __future__ import annotations

from export.errors import UserError


class EngineError(UserError):
    """An engine could not be created or was used wrongly; the message says what to do."""
