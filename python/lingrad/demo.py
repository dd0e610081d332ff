"""The main job: the fast.ai lesson's two-layer MLP, forward and backward, through lingrad.

    python -m lingrad demo [--n 50000] [--threads T] [--dtype float32]

Shapes as in the lesson: x (N, 784) -> lin1 (784 -> 50) -> ReLU -> lin2 (50 -> 1)
-> MSE. Every gradient is checked against numpy, then both are timed side by
side (interleaved, min of repeats, BLAS pinned to the same thread count).
"""
import argparse
from typing import Optional, Sequence, Tuple

import numpy as np

import lingrad

from .timing import blas_threads, interleaved_min


Step = Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def numpy_step(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
               t: np.ndarray) -> Step:
    """The lesson's step in numpy: returns (out, (dw1, db1, dw2, db2))."""
    h = np.maximum(x @ w1 + b1, 0)
    out = (h @ w2 + b2)[:, 0]
    dout = (2 * (out - t) / t.shape[0])[:, None]
    dh = (dout @ w2.T) * (h > 0)
    return out, (x.T @ dh, dh.sum(0), h.T @ dout, dout.sum(0))


def lingrad_step(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
                 t: np.ndarray) -> Step:
    """The same step through lingrad: returns (out, (dw1, db1, dw2, db2))."""
    h = lingrad.linear(x, w1, b1, relu=True)
    out = lingrad.linear(h, w2, b2)[:, 0]
    dout = (2 * (out - t) / t.shape[0])[:, None].astype(x.dtype)
    g2 = lingrad.linear_backward(h, w2, dout)
    g1 = lingrad.linear_backward(x, w1, g2.dx, relu_out=h, need_dx=False)
    return out, (g1.dw, g1.db, g2.dw, g2.db)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lingrad demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50000, help="batch size (default 50000, as MNIST)")
    p.add_argument("--threads", type=int, default=lingrad.get_num_threads())
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    r = np.random.default_rng(0)
    dt = np.dtype(a.dtype)
    x = r.standard_normal((a.n, 784)).astype(dt)
    w1 = (r.standard_normal((784, 50)) * np.sqrt(2 / 784)).astype(dt)
    b1 = np.zeros(50, dt)
    w2 = (r.standard_normal((50, 1)) * np.sqrt(1 / 50)).astype(dt)
    b2 = np.zeros(1, dt)
    t = r.standard_normal(a.n).astype(dt)
    print(f"lesson MLP: x {x.shape} -> 784x50 -> ReLU -> 50x1 -> MSE, {a.dtype}, "
          f"{a.threads} thread(s)")
    ok = True
    with lingrad.num_threads(a.threads), blas_threads(a.threads):
        out_l, grads_l = lingrad_step(x, w1, b1, w2, b2, t)  # first call compiles (or loads the cache)
        out_n, grads_n = numpy_step(*(v.astype(np.float64) for v in (x, w1, b1, w2, b2, t)))
        tol = 1e-4 if dt == np.float32 else 1e-10
        for name, g, e in zip(["out", "dw1", "db1", "dw2", "db2"], (out_l, *grads_l), (out_n, *grads_n)):
            err = np.abs(g - e).max() / max(np.abs(e).max(), 1e-30)
            good = err < tol
            ok &= bool(good)
            print(f"  {name:<4} max relative error vs numpy float64: {err:.1e}  {'ok' if good else 'FAIL'}")
        tl, tn = interleaved_min([lambda: lingrad_step(x, w1, b1, w2, b2, t),
                                  lambda: numpy_step(x, w1, b1, w2, b2, t)], repeats=a.repeats)
    print(f"forward + backward, min of {a.repeats}: lingrad {tl * 1e3:.1f} ms, "
          f"numpy {tn * 1e3:.1f} ms, speedup {tn / tl:.2f}x")
    print("all gradients match numpy" if ok else "MISMATCH against numpy")
    return 0 if ok else 1
