"""Shared pieces of the asv suite: the problems, their data, each operation
in lingrad and in numpy, its flop count, and the thread pinning.

Everything lingrad-side goes through the public API (lingrad.linear,
lingrad.linear_backward, lingrad.input_grad, lingrad.weight_grad,
lingrad.bias_grad, lingrad.set_num_threads), so the suite runs unchanged
against every commit whose API is the same.
"""
import math
import os
import time
from collections import namedtuple

import numba
import numpy as np

import lingrad

DTYPES = ["float32", "float64"]
IMPLS = ["lingrad", "numpy"]

# name -> (N, I, O): x (N, I), w (I, O), b (O,), dy (N, O)
SHAPES = {
    "50000x784->50": (50000, 784, 50),       # the lesson's hidden layer (MNIST)
    "50000x50->1": (50000, 50, 1),           # the lesson's output layer
    "2048x512->512": (2048, 512, 512),       # an MLP layer
    "32x784->50": (32, 784, 50),             # a small batch
    "1024x1024->1024": (1024, 1024, 1024),   # a square
}

Layer = namedtuple("Layer", ["x", "w", "b", "dy"])


def lingrad_step(p):
    """One training step of a ReLU layer: y = max(x @ w + b, 0), then dx, dw, db of it."""
    y = lingrad.linear(p.x, p.w, p.b, relu=True)
    return y, lingrad.linear_backward(p.x, p.w, p.dy, relu_out=y)


def numpy_step(p):
    """lingrad_step in numpy: the ReLU mask where(y > 0, dy, 0) is a temporary of dy's size."""
    y = np.maximum(p.x @ p.w + p.b, 0)
    d = np.where(y > 0, p.dy, 0)
    return y, (d @ p.w.T, p.x.T @ d, d.sum(0))


# op -> {impl: fn(Layer)}; the numpy column is the formula in each docstring of lingrad.api
OPS = {
    "forward": {"lingrad": lambda p: lingrad.linear(p.x, p.w, p.b),
                "numpy": lambda p: p.x @ p.w + p.b},
    "input_grad": {"lingrad": lambda p: lingrad.input_grad(p.dy, p.w),
                   "numpy": lambda p: p.dy @ p.w.T},
    "weight_grad": {"lingrad": lambda p: lingrad.weight_grad(p.x, p.dy),
                    "numpy": lambda p: p.x.T @ p.dy},
    "bias_grad": {"lingrad": lambda p: lingrad.bias_grad(p.dy),
                  "numpy": lambda p: p.dy.sum(0)},
    "backward": {"lingrad": lambda p: lingrad.linear_backward(p.x, p.w, p.dy),
                 "numpy": lambda p: (p.dy @ p.w.T, p.x.T @ p.dy, p.dy.sum(0))},
    "step": {"lingrad": lingrad_step, "numpy": numpy_step},
}


def flops(op, N, I, O):
    """Floating-point operations of one call: 2 per multiply-add, 1 per bias add or
    sum term; ReLU and mask comparisons are not counted."""
    matmul, rows = 2 * N * I * O, N * O
    return {"forward": matmul + rows, "input_grad": matmul, "weight_grad": matmul,
            "bias_grad": rows, "backward": 2 * matmul + rows,
            "step": 3 * matmul + 2 * rows}[op]


_data = {}
ROWS = 4096


def layer_data(shape, dtype):
    """x, w, b, dy for one problem: C-contiguous, uniform in [-0.5, 0.5) (a ReLU is on
    for about half the units), seeded. Long batches repeat a block of ROWS random
    rows (the speed of these kernels does not depend on the values, and drawing
    50000x784 numbers would cost more than the benchmark). asv runs setup before
    every sample, so the arrays are made once per process (one process serves one
    parameter combination)."""
    key = (shape, dtype)
    if key not in _data:
        _data.clear()
        N, I, O = SHAPES[shape]
        rng = np.random.default_rng(0)

        def uniform(dims):
            a = rng.random((min(dims[0], ROWS),) + dims[1:], dtype=dtype)
            a -= 0.5
            return np.resize(a, dims)  # C order, cycling through the drawn rows

        _data[key] = Layer(uniform((N, I)), uniform((I, O)), uniform((O,)), uniform((N, O)))
    return _data[key]


def bench_threads():
    """The thread count of this environment: $LINGRAD_BENCH_THREADS (set per
    environment in asv.conf.json's matrix), or "all" = Numba's pool size."""
    value = os.environ.get("LINGRAD_BENCH_THREADS", "all").strip()
    return numba.config.NUMBA_NUM_THREADS if value in ("", "all") else int(value)


def pin_threads():
    """Run lingrad's kernels and numpy's BLAS on bench_threads() threads (BLAS only
    when threadpoolctl is installed; asv.conf.json installs it)."""
    n = bench_threads()
    lingrad.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(n)  # not used as a context: the limit stays for this process
    return n


_warm = set()


def warm_up(key, fn):
    """Call fn once per process for this key: the JIT compiles (or loads from the
    on-disk cache) exactly the specialisation the timed calls use (same dtypes,
    layouts and serial/parallel path), and the outputs' pages are touched once."""
    if key not in _warm:
        fn()
        _warm.add(key)


def best_time(fn, min_calls=2, max_calls=20, budget=0.5):
    """Fastest of several calls of fn (at least min_calls, then until budget seconds)."""
    best, spent, calls = math.inf, 0.0, 0
    while calls < min_calls or (calls < max_calls and spent < budget):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best
