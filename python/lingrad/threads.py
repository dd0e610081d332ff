"""Thread count: lingrad's kernels run on Numba's thread pool.

    lingrad.set_num_threads(1)         # from now on, in this Python thread
    with lingrad.num_threads(1): ...   # for a block
    NUMBA_NUM_THREADS=2 python ...     # the pool's size, before numba is imported

Results at 1 thread and at all threads agree to rounding (the per-thread
partial sums of dw and db are float64). Numba's setting is per Python thread.
"""
from contextlib import contextmanager
from typing import Iterator

import numba


def get_num_threads() -> int:
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use n threads (1 <= n <= NUMBA_NUM_THREADS) for lingrad's parallel kernels."""
    if not isinstance(n, int) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n must be an int from 1 to {numba.config.NUMBA_NUM_THREADS} "
                         f"(NUMBA_NUM_THREADS), got {n!r}")
    numba.set_num_threads(n)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    old = numba.get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
