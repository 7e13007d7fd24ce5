"""Serves the control page (``run_live.py --ui``) with uvicorn on a thread of its own.

:func:`start_ui` binds the socket first (a port in use is a clear error, not a log line from a
thread), starts uvicorn on it, prints the URL with the token and opens the browser. The loop
never waits for the server: frames reach the page through :class:`~live.ui.bridge.FrameBridge`.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SettingError
from ..loop import LiveLoop
from .api import ControlApi, RunInfo
from .bridge import FrameBridge
from .options import UiOptions
from .security import TokenGuard, cookie_name, new_token, page_origins

log = logging.getLogger("avatarcam")


class UiServer:
    """A running control page; :meth:`close` stops it (within a second or two)."""

    def __init__(self, options: UiOptions, loop: LiveLoop, bridge: FrameBridge, info: RunInfo):
        import uvicorn  # checked by live.ui.load_server

        self.token = new_token()
        self.bridge = bridge
        sock = _bind(options)
        self.port = sock.getsockname()[1]  # the port listened on (options.port, or a free one)
        host = options.host
        url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.url = f"http://{url_host}:{self.port}/?token={self.token}"  # the page, with token
        self.obs_url = f"http://{url_host}:{self.port}/obs?token={self.token}"  # the OBS view
        hosts = {"127.0.0.1", "localhost", "[::1]", url_host}
        app = TokenGuard(
            ControlApi(loop, bridge, info).app(),
            self.token,
            page_origins(hosts, self.port),
            cookie_name(self.port),
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ui-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.bridge.close()  # streams end, so the graceful shutdown is quick
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()


def _bind(options: UiOptions) -> socket.socket:
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingError(
                f"--ui-port {options.port} is in use (another avatarcam, or another program). "
                "Pass another --ui-port, e.g. --ui-port 8771."
            ) from None
        raise SettingError(
            f"Cannot listen on {options.host}:{options.port} for the control page: "
            f"{exc.strerror or exc}. Check --ui-host (an address of this machine)."
        ) from None
    sock.listen(16)
    sock.setblocking(False)
    return sock


@contextmanager
def serve_ui(
    options: UiOptions, loop: LiveLoop, info: RunInfo, obs_size: tuple[int, int], fit: str
) -> Iterator[UiServer]:
    """Add the page's output to ``loop`` and serve the page while the block runs."""
    bridge = FrameBridge(lambda: loop.avatar_index, obs_size, fit)  # type: ignore[arg-type]
    try:
        server = UiServer(options, loop, bridge, info)
    except BaseException:
        bridge.close()
        raise
    loop.outputs.append(bridge)
    if not options.loopback:
        log.warning(
            "warning: the control page listens on %s, not only on this machine: anyone on "
            "the network who gets its URL (with the token) can drive your camera. Leave out "
            "--ui-host to keep it on 127.0.0.1.",
            options.host,
        )
    log.info("control page: %s", server.url)
    log.info("OBS browser source: %s", server.obs_url)
    if options.open_browser:
        try:
            webbrowser.open(server.url)
        except Exception as exc:  # no browser here: the printed URL is enough
            log.info("could not open a browser (%s): open the URL above", exc)
    try:
        yield server
    finally:
        server.close()
