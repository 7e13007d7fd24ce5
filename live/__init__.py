"""The live application: capture, framing, the per-frame loop, outputs and the command line.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) before
anything here loads PyTorch: see :mod:`export.threads`. Every way into the application
(``run_live.py``, the ``avatarcam`` command, ``python -m live``) imports this first.
"""

from export.threads import passive_openmp

passive_openmp()
