"""Runs in Ray Serve's HTTP proxy: bounds what uvicorn buffers of a WebSocket message, and
refuses connections over a client's budget before they reach a replica.

Ray Serve builds its proxy's ``uvicorn.Config`` itself and exposes no WebSocket options, so
uvicorn would buffer messages of up to 16 MiB and queue 32 of them per connection before a
replica sees the first byte. Serve calls the function named by the environment variable
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` when its proxy starts (its documented hook for
proxy middlewares); :func:`install` is that function. It makes the proxy's uvicorn refuse, from
the frame header, any message over ``AVATARCAM_WS_MAX_BYTES`` (close code 1009, before the
payload is read) and keep at most one received message per connection, and returns the
:class:`~engines.serve.admission.ProxyAdmission` middleware for
``AVATARCAM_MAX_SESSIONS_PER_CLIENT`` connections per client address.

:mod:`engines.serve.server` sets these variables before it starts a local Ray cluster. Nodes of
a cluster started with ``ray start`` need them in that command's environment (README).
"""

from __future__ import annotations

import os

#: The environment variables the proxy reads.
HOOK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
MAX_BYTES_VARIABLE = "AVATARCAM_WS_MAX_BYTES"
PER_CLIENT_VARIABLE = "AVATARCAM_MAX_SESSIONS_PER_CLIENT"
HOOK_PATH = "engines.serve.proxy_hook.install"


def environment(max_bytes: int, per_client: int) -> dict[str, str]:
    """The variables that make Ray Serve's proxies bound WebSocket messages to ``max_bytes``
    and connections to ``per_client`` per client address."""
    return {
        HOOK_VARIABLE: HOOK_PATH,
        MAX_BYTES_VARIABLE: str(int(max_bytes)),
        PER_CLIENT_VARIABLE: str(int(per_client)),
    }


def _int(name: str) -> int:
    value = os.environ.get(name, "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be a whole number, got {value!r}") from None


def install() -> list:
    """Serve's proxy callback: patches uvicorn's defaults in this (the proxy's) process and
    returns the admission middleware (none when the per-client variable is unset or 0)."""
    import uvicorn

    max_bytes, per_client = _int(MAX_BYTES_VARIABLE), _int(PER_CLIENT_VARIABLE)
    if max_bytes > 0 and not getattr(uvicorn.Config, "_avatarcam", False):
        base = uvicorn.Config

        class BoundedConfig(base):  # type: ignore[misc, valid-type]
            _avatarcam = True

            def __init__(self, *args, **kwargs):
                kwargs.setdefault("ws_max_size", max_bytes)
                kwargs.setdefault("ws_max_queue", 1)
                super().__init__(*args, **kwargs)

        uvicorn.Config = BoundedConfig  # type: ignore[misc]
    if per_client <= 0:
        return []
    from starlette.middleware import Middleware

    from .admission import ProxyAdmission

    return [Middleware(ProxyAdmission, limit=per_client)]
