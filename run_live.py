#!/usr/bin/env python3
"""avatarcam: animate an avatar photo with your face, live or offline. See --help."""

from live.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
