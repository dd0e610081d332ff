"""Timing helpers shared by the demo, the bench and the ladder.

Rules (this machine is shared and noisy): compare ratios measured in one run,
interleaved, as the minimum of several repeats, with BLAS threads pinned to
Numba's count, never include JIT compilation, and let one library's idle
threads go to sleep before timing the next.
"""
import contextlib
import time
from typing import Callable, List, Optional, Sequence


def blas_threads(n: int) -> contextlib.ExitStack:
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


def interleaved_min(fns: Sequence[Callable[[], object]], repeats: int = 5, min_time: float = 0.05,
                    cooldown: Optional[float] = None) -> List[float]:
    """Best time of one call of each fn, running them in turn (A B C A B C ...).

    Each fn runs once first (warm-up: JIT compilation and caches). Then, in
    each repeat, each fn gets a block of calls lasting about min_time seconds,
    each call timed on its own; the result is the fastest call seen.

    cooldown: seconds of sleep before each block, by default 0.12 s when more
    than one fn is timed. An idle OpenBLAS worker spins for about 0.1 s after
    each call (measured here: lingrad's first calls after a numpy GEMM ran 2x
    slower, sharing the core), and OpenMP teams (Numba's, PyTorch's) spin too;
    with PyTorch in the rotation, lingrad's float64 layer step measured 765 ms
    without the pause and 389 ms alone. The pause lets the previous library's
    threads go to sleep, so no library is timed while another's hold the cores.
    """
    if cooldown is None:
        cooldown = 0.12 if len(fns) > 1 else 0.0
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
            time.sleep(cooldown)
            for _ in range(loops[k]):
                t0 = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best
