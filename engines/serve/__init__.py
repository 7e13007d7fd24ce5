"""The avatar server (``python -m engines.serve``): FOMM on Ray Serve, one WebSocket per stream.

:mod:`.protocol` is the wire format (pure, no Ray), :mod:`.session` a stream's state machine,
:mod:`.runner` the batched model calls, :mod:`.deployment` the Ray Serve application and
:mod:`.server` the command. Importing this package does not import Ray.
"""

from __future__ import annotations

from .settings import DEFAULT_PORT, HEALTH_PATH, STREAM_PATH, ServerSettings

__all__ = ["DEFAULT_PORT", "HEALTH_PATH", "STREAM_PATH", "ServerSettings"]
