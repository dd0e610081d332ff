"""The first compile: a notice when it happens, and ``python -m lingrad compile`` to do it early.

Numba compiles each kernel for this machine on its first call with a new dtype,
then saves the result in its on-disk cache (every kernel has ``cache=True``); a
later process loads it from there. The notice: the first time in a process that
one of lingrad's kernels is *compiled* for a dtype (not loaded from the cache),
one line goes to stderr saying so. It is driven by Numba's documented event API
(``numba.core.event``): Numba broadcasts a "numba:compile" event only after its
cache lookup has missed, so a warm cache prints nothing, and a cache that lacks
some of the kernels (a path never run before) prints the notice when one of them
compiles. Nothing runs on the calling path of the API.

``python -m lingrad compile [--dtypes float32 float64]`` fills the cache ahead of
time by calling the public API on WARM_SHAPES. Where the cache lives: README,
"Compile time".
"""
import argparse
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numba
import numpy as np
import numpy.typing as npt
from numba.core import event, types
from numba.core.dispatcher import Dispatcher

import lingrad

# 2-core Zen 5, 2026-12-04: 6-10 s for a first ReLU layer, 10-12 s for all; 2-core Zen 4,
# 2026-12-06 (with the wide register block's copies): 10.6-11.1 s and 16.7 s; later that day
# (the micro-kernel's stores with and without the bias): 12.1 s and 17-22 s
ESTIMATE = "about 5 to 20 s"
KERNELS = "lingrad.kernels."
# The study path's rungs (python -m lingrad ladder): compiled by the ladder itself,
# not by the API, so neither announced nor warmed here.
NOT_NOTICED = ("lingrad.kernels.ladder",)

# Shapes for the warm-up: (N, I, O) for x (N, I), w (I, O). Which kernels a call runs
# is lingrad.plan's choice (serial below SERIAL_WORK multiply-adds; the forward and dx
# parallel over rows of C; dw over the batch, on a second thread only from 2 * DW_SPLIT_ROWS
# rows; db alone on a second thread only from 2 * REDUCE_ROWS rows); the engine compiles
# one copy of each kernel per dtype (and per dtype of C), whatever the layout.
# tests/test_compile.py checks that once these are warm, calls on other shapes, layouts
# and options compile nothing (at 1 thread; at all threads with LINGRAD_RUN_SLOW=1).
WARM_SHAPES: Tuple[Tuple[int, int, int], ...] = (
    (4, 3, 5),       # serial work: every product on the calling thread
    (40, 20, 3),     # serial, fewer outputs than one micro-kernel panel
    (100, 3, 4),     # serial, a summed axis of 3 for the forward
    (1, 784, 50),    # one row (the lesson's first layer)
    (2, 30, 20),     # a summed axis of 2 for dw
    (300, 50, 1),    # one output column
    (32, 784, 50),   # parallel forward and dx on a batch of 32; dw and db serial
    (300, 784, 50),  # parallel forward and dx on the lesson's first layer
    (300, 20, 600),  # parallel, a short summed axis for the forward and a long one for dx
    (600, 64, 48),   # a batch past DW_DIRECT_ROWS: dw.T in per-thread partials, in parallel
    (10000, 20, 8),  # db alone past 2 * REDUCE_ROWS rows: the parallel colsum
    (20000, 40, 2),  # parallel dot kernel (the forward) and axpy (dx, a summed axis of 2)
)

_noticed: Set[np.dtype] = set()
_lock = threading.Lock()


def is_kernel(dispatcher: Any) -> bool:
    """Whether a Numba dispatcher is one of the kernels the API calls (lingrad.kernels,
    not the ladder)."""
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.startswith(KERNELS) and not module.startswith(NOT_NOTICED)


def data_dtype(arg_types: Sequence[Any]) -> Optional[np.dtype]:
    """The data dtype of a kernel signature: its narrowest float array type. (A float32
    call also passes float64 partial sums; a float64 call passes no float32 array.)"""
    flat: List[Any] = []
    for t in arg_types:  # the engine's operand views are tuples holding an array
        is_tuple = isinstance(t, types.BaseTuple)  # type: ignore[attr-defined]
        flat.extend(t.types if is_tuple else [t])
    floats = [t.dtype for t in flat
              if isinstance(t, types.Array) and isinstance(t.dtype, types.Float)]
    if not floats:
        return None
    return np.dtype(str(min(floats, key=lambda f: f.bitwidth)))


def cache_dir() -> str:
    """Where Numba caches lingrad's kernels in this process (NUMBA_CACHE_DIR, the
    kernels' __pycache__, or the user-wide fallback; see the README)."""
    found = kernels()
    return str(found[0].stats.cache_path) if found else "(no kernels loaded)"


def notice_once(dtype: npt.DTypeLike) -> bool:
    """Print the one-line compile notice for ``dtype`` to stderr, once per process.

    Returns True when this call printed it. The "numba:compile" listener below calls
    it; it can also be called directly.
    """
    dtype = np.dtype(dtype)
    with _lock:
        if dtype in _noticed:
            return False
        _noticed.add(dtype)
    print(f"lingrad: compiling the {dtype} kernels for this machine ({ESTIMATE}, once: "
          f"Numba caches them in {cache_dir()}; `python -m lingrad compile` does it "
          f"ahead of time)", file=sys.stderr, flush=True)
    return True


class _FirstCompile(event.Listener):
    """Calls notice_once when Numba starts compiling one of lingrad's kernels."""

    def on_start(self, ev: event.Event) -> None:
        try:
            data = ev.data
            if is_kernel(data["dispatcher"]):
                dtype = data_dtype(data["args"])
                if dtype is not None:
                    notice_once(dtype)
        except Exception:  # a notice must never break a compile
            pass

    def on_end(self, ev: event.Event) -> None:
        pass


event.register("numba:compile", _FirstCompile())


def kernels() -> List[Dispatcher]:
    """Every Numba dispatcher defined in lingrad.kernels' modules (the ladder's excepted)."""
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith(KERNELS) or name.startswith(NOT_NOTICED):
            continue
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == name:
                found.append(obj)
    return found


def cache_counts() -> Dict[str, Tuple[int, int]]:
    """{kernel name: (signatures compiled, signatures loaded from the cache)} so far."""
    return {f"{d.py_func.__module__}.{d.py_func.__name__}":
            (sum(d.stats.cache_misses.values()), sum(d.stats.cache_hits.values()))
            for d in kernels()}


def warm(dtype: npt.DTypeLike,
         shapes: Sequence[Tuple[int, int, int]] = WARM_SHAPES) -> None:
    """Call every public function, with and without each option, on ``shapes``."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    for N, I, O in shapes:
        x, w, dy = (rng.standard_normal(s).astype(dtype) for s in ((N, I), (I, O), (N, O)))
        b = rng.standard_normal(O).astype(dtype)
        lingrad.linear(x, w)
        lingrad.linear(x, w, b)
        y = lingrad.linear(x, w, b, relu=True)
        lingrad.linear(x, np.asfortranarray(w), b)  # a PyTorch weight's .T: read without a copy
        lingrad.linear_backward(x, w, dy)
        g = lingrad.linear_backward(x, w, dy, relu_out=y)
        lingrad.linear_backward(x, w, dy, need_dx=False)
        lingrad.linear_backward(x, w, dy, relu_out=y, out=g, accumulate=True)
        lingrad.input_grad(dy, w)
        lingrad.input_grad(dy, np.asfortranarray(w), relu_out=y)
        lingrad.weight_grad(x, dy)
        lingrad.weight_grad(x, dy, relu_out=y, out=g.dw, accumulate=True)
        lingrad.bias_grad(dy)
        lingrad.bias_grad(dy, relu_out=y, out=g.db, accumulate=True)
    lingrad.Linear(w, b).step(0.5)  # the SGD update (kernels/engine.py sgd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lingrad compile",
        description="Compile lingrad's kernels now, into Numba's on-disk cache, so that the "
                    "first call of a later process does not wait for the compiler.")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                   default=["float32", "float64"], help="dtypes to compile (default: both)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list each kernel compiled or loaded from the cache")
    args = p.parse_args(argv)
    for name in args.dtypes:
        before = cache_counts()
        t0 = time.perf_counter()
        warm(name)
        seconds = time.perf_counter() - t0
        after = cache_counts()
        delta = {k: (c - before.get(k, (0, 0))[0], h - before.get(k, (0, 0))[1])
                 for k, (c, h) in after.items()}
        compiled = sum(c for c, _ in delta.values())
        loaded = sum(h for _, h in delta.values())
        print(f"{name}: {compiled} kernel signatures compiled, {loaded} loaded from the cache, "
              f"{seconds:.1f} s")
        if args.verbose:
            for k, (c, h) in sorted(delta.items()):
                if c or h:
                    print(f"    {k}: {'compiled' if c else 'loaded'}")
    print(f"cache: {cache_dir()}")
    if numba.get_num_threads() == 1:
        print("(one thread: only the serial kernels ran; the parallel ones compile on first use "
              "with more threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
