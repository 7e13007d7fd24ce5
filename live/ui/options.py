"""Settings of the control page (``--ui``, ``--ui-port``, ``--ui-host``, ``--no-browser``)."""

from __future__ import annotations

from dataclasses import dataclass

from engines.serve.settings import is_loopback
from live.errors import SettingError

#: The page's port unless --ui-port says otherwise.
DEFAULT_PORT = 8770


@dataclass(frozen=True)
class UiOptions:
    """Where the control page listens and whether a browser is opened on it."""

    host: str = "127.0.0.1"  # address to listen on; anything but loopback is warned about
    port: int = DEFAULT_PORT  # TCP port; 0 picks a free one (tests)
    open_browser: bool = True  # open the page in the default browser once it listens

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingError(
                f"--ui-port {self.port}: expected a TCP port from 1 to 65535 (0: any free one)."
            )
        if not self.host.strip():
            raise SettingError("--ui-host is empty: expected an address such as 127.0.0.1.")

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the page."""
        return is_loopback(self.host)
