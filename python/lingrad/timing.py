"""Timing helpers shared by the demo, the bench, the train benchmark and the ladder.

Rules (this machine is shared and noisy): compare ratios measured in one run,
interleaved, as the minimum of several repeats, with BLAS threads pinned to
Numba's count, never include JIT compilation, and let one library's idle
threads go to sleep before timing the next.

Thread counts (``bench`` and ``train``): a run on fewer threads than the
process may use is pinned to that many cores (``pinned``), so no library can
spread over more; XLA ignores thread settings once it has started, so
``per_thread_count`` runs each count in a fresh process that pins itself (and
sets ``XLA_FLAGS``, see ``xla_flags``) before JAX starts its threads.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

# s of sleep before each timed block (see interleaved_min). An idle OpenBLAS worker spins
# for about 0.1 s after each call, and OpenMP teams (Numba's, PyTorch's) and XLA's workers
# spin too. Measured with the kernels before the GEMM engine, on the 2-core Zen 4 VM:
# lingrad's first calls after a numpy GEMM ran 2x slower, sharing the core; with PyTorch
# in the rotation, lingrad's float64 layer step took 765 ms without the pause, 389 ms alone.
COOLDOWN = 0.15

def blas_threads(n: int) -> contextlib.ExitStack:
    """Pin numpy's BLAS (and PyTorch, when imported) to n threads; a no-op context
    when threadpoolctl is not installed (pip install "lingrad[bench]")."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(n))
    except ImportError:
        pass
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

    cooldown: seconds of sleep before each block, by default COOLDOWN (0.15 s)
    when more than one fn is timed. Idle BLAS, OpenMP and XLA workers spin for
    a while after a call (the measurements are beside COOLDOWN); the pause lets
    the previous library's threads go to sleep, so no library is timed while
    another's hold the cores.
    """
    if cooldown is None:
        cooldown = COOLDOWN if len(fns) > 1 else 0.0
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


def allowed_cores() -> List[int]:
    """The cores this process may run on (all of os.cpu_count() where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def current_cores() -> Optional[List[int]]:
    """This process's cores now (None where the OS has no affinity call)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def short_of_cores(row: Mapping[str, Any]) -> bool:
    """True when a row's run had fewer cores than threads, at its start ("cores") or its
    end ("cores_after"): another program narrowed the affinity, and the times are not
    times on that many threads."""
    lists = [row.get("cores"), row.get("cores_after")]
    return any(c is not None and len(c) < row["threads"] for c in lists)


def cores_for(threads: int) -> Optional[List[int]]:
    """The cores a run on ``threads`` threads is pinned to: the first ``threads`` of
    allowed_cores(), or None (no pinning) when it asks for all of them or more."""
    cores = allowed_cores()
    return None if threads >= len(cores) else cores[:threads]


def _set_affinity_all(cores: Iterable[int]) -> None:
    """Set the affinity of every thread of this process; threads started later inherit
    their parent thread's mask. Linux lists the threads in /proc/self/task."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # no /proc: the calling thread only
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # the thread ended meanwhile
            pass


@contextlib.contextmanager
def pinned(cores: Optional[Iterable[int]]) -> Iterator[None]:
    """Run the block with every thread of this process (BLAS's, OpenMP's, XLA's,
    and those started inside) on ``cores``; restore the previous mask after.
    A no-op for cores=None or where the OS has no affinity call."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    _set_affinity_all(set(cores))
    try:
        yield
    finally:
        _set_affinity_all(old)


def xla_flags(threads: int) -> str:
    """XLA_FLAGS for a run on ``threads`` threads: at 1 thread, XLA's CPU backend is
    told not to split a matmul across its Eigen pool. Read once, when JAX starts its
    backend; the pool's size follows the process's affinity at that moment."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return flags


@contextlib.contextmanager
def thread_setup(threads: int) -> Iterator[None]:
    """Everything a run on ``threads`` threads needs in this process: XLA_FLAGS set
    (when JAX has not started yet) and the process pinned to cores_for(threads)."""
    have = len(allowed_cores())
    if have < threads:
        print(f"warning: this process may run on {have} core(s), fewer than the {threads} threads "
              f"asked for; its times are not {threads}-thread times", file=sys.stderr, flush=True)
    old = os.environ.get("XLA_FLAGS")
    if "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = xla_flags(threads)
    try:
        with pinned(cores_for(threads)):
            yield
    finally:
        if old is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = old


def per_thread_count(command: str, argv: Sequence[str],
                     thread_counts: Iterable[int]) -> List[Dict[str, Any]]:
    """Rows of ``python -m lingrad <command> <argv> --threads T`` for each T, each run in
    a fresh process (``--child``: one thread count, rows to ``--json``, no table), so
    that it pins itself and sets XLA_FLAGS before any library starts its threads.
    argv's own --threads and --json are overridden (argparse keeps the last). Each child
    gets this process's NUMBA_NUM_THREADS, so its pool's size does not depend on its
    affinity when it starts (Numba sizes the pool from it)."""
    import numba
    env = dict(os.environ, NUMBA_NUM_THREADS=str(numba.config.NUMBA_NUM_THREADS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lingrad-bench-") as tmp:
        for t in thread_counts:
            path = os.path.join(tmp, f"rows-{t}.json")
            cmd = [sys.executable, "-m", "lingrad", command, *argv,
                   "--threads", str(t), "--json", path, "--child"]
            subprocess.run(cmd, check=True, env=env)
            with open(path) as f:
                rows += json.load(f)
    return rows


def peer(name: str) -> Any:
    """The optional peer library ``name`` ("torch" or "jax"), or None when it is not
    installed. JAX gets 64-bit types switched on, so float64 arrays stay float64."""
    try:
        if name == "torch":
            import torch
            return torch
        if name == "jax":
            import jax
            jax.config.update("jax_enable_x64", True)
            return jax
    except ImportError:
        return None
    raise ValueError(f"unknown peer {name!r}")
