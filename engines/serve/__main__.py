"""``python -m engines.serve``: see :mod:`engines.serve.server`."""

import sys

from .server import main

sys.exit(main())
