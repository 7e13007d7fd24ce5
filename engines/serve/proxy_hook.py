"""Runs in Ray Serve's HTTP proxy: bounds what uvicorn buffers of a WebSocket message.

Ray Serve builds its proxy's ``uvicorn.Config`` itself and exposes no WebSocket options, so
uvicorn would buffer messages of up to 16 MiB and queue 32 of them per connection before a
replica sees the first byte. Serve calls the function named by the environment variable
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` when its proxy starts (its documented hook for
proxy middlewares); :func:`install` is that function. It makes the proxy's uvicorn refuse, from
the frame header, any message over ``AVATARCAM_WS_MAX_BYTES`` (close code 1009, before the
payload is read) and keep at most one received message per connection; it adds no middleware.

:mod:`engines.serve.server` sets both variables before it starts a local Ray cluster. Nodes of a
cluster started with ``ray start`` need them in that command's environment (README).
"""

from __future__ import annotations

import os

#: The environment variables the proxy reads.
HOOK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
MAX_BYTES_VARIABLE = "AVATARCAM_WS_MAX_BYTES"
HOOK_PATH = "engines.serve.proxy_hook.install"


def environment(max_bytes: int) -> dict[str, str]:
    """The variables that make Ray Serve's proxies bound WebSocket messages to ``max_bytes``."""
    return {HOOK_VARIABLE: HOOK_PATH, MAX_BYTES_VARIABLE: str(int(max_bytes))}


def install() -> list:
    """Serve's proxy callback: patches uvicorn's defaults in this (the proxy's) process."""
    import uvicorn

    max_bytes = int(os.environ.get(MAX_BYTES_VARIABLE, "0"))
    if max_bytes <= 0 or getattr(uvicorn.Config, "_avatarcam", False):
        return []
    base = uvicorn.Config

    class BoundedConfig(base):  # type: ignore[misc, valid-type]
        _avatarcam = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("ws_max_size", max_bytes)
            kwargs.setdefault("ws_max_queue", 1)
            super().__init__(*args, **kwargs)

    uvicorn.Config = BoundedConfig  # type: ignore[misc]
    return []
