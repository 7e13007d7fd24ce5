"""Benchmarks of avatarcam's inference backends: ``python -m benchmarks --help``.

Latency per frame and per stage, batched throughput, peak memory and accuracy of every
backend and precision, against the original FOMM demo loop (eager PyTorch fp32, unsplit) as
the baseline. Results: a terminal table, JSON, Markdown and a PNG plot.
"""

from export.threads import passive_openmp

# Before torch loads: see export.threads. Every benchmark entry point imports this package first.
passive_openmp()
