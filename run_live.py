#!/usr/bin/env python3
"""avatarcam: animate an avatar photo with your face, live or offline. See --help."""

from export.threads import passive_openmp

passive_openmp()  # OMP_WAIT_POLICY=PASSIVE before torch loads (export.threads)

from live.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
