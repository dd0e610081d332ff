"""asv benchmarks for lingrad (see docs/asv.md).

Numba reads NUMBA_NRT_STATS once, when it is first imported; the suite's
memory benchmarks need its allocation counters, so the switch is set here,
before any benchmark module imports numba. An explicit setting in the
environment wins.
"""
import os

os.environ.setdefault("NUMBA_NRT_STATS", "1")
