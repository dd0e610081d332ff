"""python -m lingrad overhead: the Python time of each entry point on a tiny call (issue 12).

For each entry point, on a 1-row call (784 -> 50 by default) with out= buffers given:
- call: the whole call, lingrad.linear(x, w, b, out=y) and so on;
- kernel: the same Numba kernels called directly with the arguments the call passed them
  (recorded from one call, then replayed): their work and Numba's dispatch;
- overhead = call - kernel: validation, planning, views, allocation, Python.
Each time is the minimum over many repeats of the mean of a block of calls, call and
kernel interleaved; pin the process for steadier numbers (taskset -c 1 python -m lingrad
overhead). Numba's thread count is set to 1 for the run.
"""
import argparse
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

KERNELS = ["gemm", "gemm_task", "narrow", "narrow_task", "pack_whole_b", "pack_panels", "merge",
           "merge_part", "colsum", "colsum_rows", "colsum_into"]


def best_us(f: Callable[[], object], block: int = 200, repeats: int = 200) -> float:
    """Fastest mean time of one call of f over ``repeats`` blocks of ``block`` calls, in µs."""
    f()
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(block):
            f()
        best = min(best, (clock() - t0) / block)
    return best / 1000


def recorded(f: Callable[[], object]) -> Tuple[Callable[[], None], List[str]]:
    """Run f once with lingrad's engine kernels wrapped; return a replay of the kernel calls it
    made (the same functions on the same arguments) and their names."""
    from lingrad import kernels as K
    calls: List[Tuple[Any, tuple]] = []
    real = {n: getattr(K.engine, n) for n in KERNELS}

    def wrap(fn: Any) -> Callable[..., Any]:
        def rec(*args: Any) -> Any:
            calls.append((fn, args))
            return fn(*args)
        return rec

    for n, fn in real.items():
        setattr(K.engine, n, wrap(fn))
    try:
        f()
    finally:
        for n, fn in real.items():
            setattr(K.engine, n, fn)

    def replay() -> None:
        for fn, a in calls:
            fn(*a)
    return replay, [fn.py_func.__name__ for fn, _ in calls]


def entry_points(N: int, I: int, O: int, dtype: Any) -> Dict[str, Callable[[], object]]:
    import lingrad
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, I)).astype(dtype)
    w = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    y, dx = np.empty((N, O), dtype), np.empty((N, I), dtype)
    dw, db = np.empty((I, O), dtype), np.empty(O, dtype)
    layer = lingrad.Linear(w.copy(), b.copy())
    layer(x)
    return {
        "linear": lambda: lingrad.linear(x, w, b, out=y),
        "linear relu": lambda: lingrad.linear(x, w, b, relu=True, out=y),
        "linear_backward": lambda: lingrad.linear_backward(x, w, dy, out=(dx, dw, db)),
        "input_grad": lambda: lingrad.input_grad(dy, w, out=dx),
        "weight_grad": lambda: lingrad.weight_grad(x, dy, out=dw),
        "bias_grad": lambda: lingrad.bias_grad(dy, out=db),
        "Linear forward": lambda: layer(x),
        "Linear backward": lambda: layer.backward(dy),
        "numpy dy.sum(0, out=db)": lambda: dy.sum(0, out=db),
    }


def measure(N: int = 1, I: int = 784, O: int = 50, dtype: Any = np.float32,
            rounds: int = 3) -> List[Tuple[str, float, float, List[str]]]:
    """(name, call µs, kernel µs, kernels) per entry point; each the minimum over rounds."""
    import lingrad
    rows: List[Tuple[str, float, float, List[str]]] = []
    with lingrad.num_threads(1):
        for name, f in entry_points(N, I, O, dtype).items():
            f()
            if name.startswith("numpy"):
                rows.append((name, min(best_us(f) for _ in range(rounds)), 0.0, []))
                continue
            replay, names = recorded(f)
            call = kernel = float("inf")
            for _ in range(rounds):
                call = min(call, best_us(f))
                kernel = min(kernel, best_us(replay))
            rows.append((name, call, kernel, names))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lingrad overhead", description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="1x784x50", help="NxIxO (default 1x784x50)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    a = ap.parse_args(argv)
    N, I, O = (int(v) for v in a.shape.split("x"))
    print(f"{a.shape} {a.dtype}, 1 thread, out= given; µs per call (min of repeats)")
    print(f"{'entry point':<24} {'call':>7} {'kernel':>7} {'overhead':>8}  kernels")
    for name, call, kernel, names in measure(N, I, O, np.dtype(a.dtype)):
        print(f"{name:<24} {call:7.2f} {kernel:7.2f} {call - kernel:8.2f}  {', '.join(names)}")
    return 0
