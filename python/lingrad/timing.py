"""Timing helpers shared by the demo, the bench and the ladder.

Rules (this machine is shared and noisy): compare ratios measured in one run,
interleaved, as the minimum of several repeats, with BLAS threads pinned to
Numba's count, and never include JIT compilation.
"""
import contextlib
import time

import numba


def blas_threads(n):
    """Pin numpy's BLAS (and PyTorch, when imported) to n threads; a no-op context
    when threadpoolctl is not installed (pip install "lingrad[bench]")."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(n))
    except ImportError:
        pass
    import sys
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        stack.callback(torch.set_num_threads, old)
    return stack


def interleaved_min(fns, repeats=5, min_time=0.05):
    """Best time per call of each fn, running them in turn (A B C A B C ...).

    Each fn runs once first (warm-up: JIT compilation and caches), then each
    repeat calls it enough times to last about min_time seconds.
    """
    loops = []
    for f in fns:
        f()
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        loops.append(max(1, int(min_time / max(dt, 1e-9))))
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(loops[k]):
                f()
            best[k] = min(best[k], (time.perf_counter() - t0) / loops[k])
    return best


def threads_now():
    return numba.get_num_threads()
