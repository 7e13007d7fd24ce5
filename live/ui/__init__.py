"""The control page in the browser (``run_live.py --ui``): gallery, live view, controls, /obs.

:mod:`live.ui.options` holds the settings and imports nothing heavy; the server
(:mod:`live.ui.server`, Starlette and uvicorn from the ``ui`` extra) is imported only when a
run asks for the page.
"""

from __future__ import annotations

from types import ModuleType

from export.errors import MissingDependencyError


def load_server() -> ModuleType:
    """:mod:`live.ui.server`, or an error naming the ``ui`` extra when its packages are
    missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"The control page (--ui) needs Starlette and uvicorn ({exc}).\n"
            "Install them with:  pip install 'avatarcam[ui]'   (or: pip install -e '.[ui]')"
        ) from exc
    from . import server

    return server
