"""The optimisation ladder, timed: eight rungs from the formula's loops to the engine's technique.

    python -m lingrad ladder [--n 50000] [--dtype float32] [--threads T] [--repeats 3]

For the weight gradient dw = x.T @ dy, the forward y = x @ w and the input
gradient dx = dy @ w.T on the lesson's shape (x: N x 784, w: 784 x 50), each
rung of lingrad.kernels.ladder is first checked against numpy (float64, within
a k*eps rounding bound), then all are timed interleaved (min of repeats, JIT
compilation excluded), followed by lingrad's production call and numpy (BLAS
pinned to the same thread count). Rungs 1-6 are serial kernels (1 thread);
rungs 7-8, lingrad and numpy use T. Rung 1 is slow: it is timed on the first
--naive-n rows and its full-size time is extrapolated (marked *). The last
line of each table compares rung 8 with lingrad's production call. Steps that
tie on the lesson's shape (the technique has nothing to fix there) are then
timed on a shape where they pay (SHOWCASE; --no-showcase skips them). Why each
rung is faster: docs/ladder.md.
"""
import argparse
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

import lingrad
from lingrad import kernels as K
from lingrad import plan as P
from lingrad.kernels import ladder as L

from .timing import blas_threads, interleaved_min

# Steps that tie on the lesson's shape, where the technique has nothing to fix, and a shape
# where each pays: (rung before, rung, (N, I, O), why). The ladder times each of them there
# too, in the same run. Chosen on Zen 5 (AVX-512, 48 KB L1d, 1 MB L2 per core), float32,
# 2026-12-04; docs/ladder.md has the measurements and the steps that tie on every shape
# tried (the forward's and dw's blocking, dw's packing). dw's fusion moved from 50000 x 16 ->
# 256 to -> 1024 when rungs 7-8 took float64 partials (Zen 4, 2026-12-06, 2 threads, 7+ / 8:
# 22.5 / 18.3 ms there, 102.9 / 77.9 here; a ladder run read 0.95x at -> 256).
SHOWCASE = {
    "dw": (("7+", "8", (50000, 16, 1024), "fusion: dy (205 MB) read once for dw and db"),),
    "forward": (("4", "5", (2000, 1024, 4096), "packing: rows of w 16 KiB apart"),
                ("7+", "8", (50000, 16, 256), "fusion: y (51 MB) against 0.4 GFLOP")),
    "dx": (("4", "5", (5000, 4096, 784), "packing: rows of w.T 16 KiB apart"),
           ("5", "6", (1000, 784, 16384), "blocking: a panel of w.T is 16384 x NR, past L2"),
           ("7+", "8", (50000, 16, 256), "fusion: the masked copy of dy (51 MB) never made")),
}

class Rung:
    """One row of the table: a zero-argument callable, the work it does, how to check it."""

    def __init__(self, label: str, what: str, threads: int, flops: int, run: Callable[[], object],
                 check: Callable[[], bool], baseline: Optional[str] = None,
                 rows_timed: Optional[Tuple[int, int]] = None) -> None:
        self.label, self.what, self.threads, self.flops = label, what, threads, flops
        self.run, self.check, self.baseline = run, check, baseline
        self.rows_timed = rows_timed  # (timed, N) when timed on a subsample of the batch
        self.seconds = float("nan")  # set by check_and_time

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def within_bound(got: np.ndarray, ref64: np.ndarray, scale: np.ndarray, k: int,
                 dtype: npt.DTypeLike) -> bool:
    """True when |got - ref| <= (k + 2) * eps * scale everywhere (the tests' rounding bound)."""
    eps = np.finfo(dtype).eps
    return bool(np.all(np.abs(got.astype(np.float64) - ref64) <= (k + 2) * eps * scale + 1e-300))


def blocks(op: str, I: int, O: int, itemsize: int) -> Tuple[int, int, bool]:
    """(mc, kc, wide) for rungs 4-8, from kernels/config.py as lingrad.plan chooses them: the
    forward and dx take a summed axis up to KC_MAX whole (else KC_BLOCK slices) and MC rows
    of C per block; dw takes KC_DW rows of the batch by MC_DW outputs per block; wide: the
    register block is MR_WIDE x NV_WIDE (plan.register_block, for C's columns and the sum;
    the ladder's rungs run the MR x NV block where the engine would run the tall one)."""
    if op == "dw":
        return K.MC_DW, K.KC_DW, P.register_block(I, None, itemsize) == 1
    k, n = (I, O) if op == "forward" else (O, I)
    return K.MC, (k if k <= K.KC_MAX else K.KC_BLOCK), P.register_block(n, k, itemsize) == 1


def weight_grad_rungs(x: np.ndarray, dy: np.ndarray, w: np.ndarray, n_naive: int, T: int) -> List[Rung]:
    """The rows for dw = x.T @ dy (and db = dy.sum(0) in rung 8)."""
    N, I = x.shape
    O = dy.shape[1]
    dt = x.dtype
    mc, kc, wide = blocks("dw", I, O, dt.itemsize)
    dw, db = np.empty((I, O), dt), np.empty(O, dt)
    xs, dys = x[:n_naive], dy[:n_naive]
    X, DY = x.astype(np.float64), dy.astype(np.float64)
    scale, ref = np.abs(X).T @ np.abs(DY), X.T @ DY
    check_dw = lambda: within_bound(dw, ref, scale, N, dt)  # noqa: E731
    check_dw_db = lambda: check_dw() and within_bound(db, DY.sum(0), np.abs(DY).sum(0), N, dt)  # noqa: E731
    small_scale = np.abs(X[:n_naive]).T @ np.abs(DY[:n_naive])
    check_small = lambda: within_bound(dw, X[:n_naive].T @ DY[:n_naive], small_scale, n_naive, dt)  # noqa: E731
    f, f_db = 2 * N * I * O, 2 * N * I * O + N * O

    def unfused() -> None:
        L.dw_parallel(x, dy, dw, mc, kc, T, wide)
        L.db_parallel(dy, db, T)

    return [
        Rung("1", "dw_naive: loops i, j, n (formula order)", 1, 2 * n_naive * I * O,
             lambda: L.dw_naive(xs, dys, dw), check_small, rows_timed=(n_naive, N)),
        Rung("2", "dw_rows: loops n, i, j (contiguous j)", 1, f, lambda: L.dw_rows(x, dy, dw), check_dw, "1"),
        Rung("3", "dw_register: 4x4 block of x in regs, 64 rows", 1, f,
             lambda: L.dw_register(x, dy, dw), check_dw, "2"),
        Rung("4", f"dw_micro: micro-kernel, {kc} rows a step", 1, f,
             lambda: L.dw_micro(x, dy, dw, kc, wide), check_dw, "3"),
        Rung("5", "dw_packed: + dy.T packed in micro-panels", 1, f,
             lambda: L.dw_packed(x, dy, dw, kc, wide), check_dw, "4"),
        Rung("6", f"dw_blocked: five loops, {kc} x {mc} blocks", 1, f,
             lambda: L.dw_blocked(x, dy, dw, mc, kc, wide), check_dw, "5"),
        Rung("7", "dw_parallel: prange, per-thread partials", T, f,
             lambda: L.dw_parallel(x, dy, dw, mc, kc, T, wide), check_dw, "6"),
        Rung("7+", "rung 7, then db in a second pass over dy", T, f_db, unfused, check_dw_db),
        Rung("8", "dw_db_fused: db summed while dy is packed", T, f_db,
             lambda: L.dw_db_fused(x, dy, dw, db, mc, kc, T, wide), check_dw_db, "7+"),
        Rung("lg", "lingrad.weight_grad(x, dy)", T, f, lambda: lingrad.weight_grad(x, dy, out=dw),
             check_dw, "7"),
        Rung("lg", "lingrad.linear_backward(need_dx=False)", T, f_db,
             lambda: lingrad.linear_backward(x, w, dy, need_dx=False, out=(None, dw, db)), check_dw_db, "8"),
        Rung("np", "numpy: x.T @ dy", T, f, lambda: np.matmul(x.T, dy, out=dw), check_dw, "7"),
        Rung("np", "numpy: x.T @ dy, dy.sum(0)", T, f_db,
             lambda: (np.matmul(x.T, dy, out=dw), dy.sum(0, out=db)), check_dw_db, "8"),
    ]


def forward_rungs(x: np.ndarray, w: np.ndarray, b: np.ndarray, n_naive: int, T: int) -> List[Rung]:
    """The rows for y = x @ w (and + b, then ReLU, in rung 8)."""
    N, I = x.shape
    O = w.shape[1]
    mc, kc, wide = blocks("forward", I, O, x.itemsize)
    y = np.empty((N, O), x.dtype)
    xs = x[:n_naive]
    X, W, B = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    scale = np.abs(X) @ np.abs(W)
    check_y = lambda: within_bound(y, X @ W, scale, I, x.dtype)  # noqa: E731
    check_relu = lambda: within_bound(y, np.maximum(X @ W + B, 0), scale + np.abs(B), I, x.dtype)  # noqa: E731
    check_small = lambda: within_bound(y[:n_naive], X[:n_naive] @ W, scale[:n_naive], I, x.dtype)  # noqa: E731
    f, f_relu = 2 * N * I * O, 2 * N * I * O + 2 * N * O

    def unfused() -> None:
        L.y_parallel(x, w, y, mc, kc, T, wide)
        L.bias_relu(y, b)

    return [
        Rung("1", "y_naive: loops n, j, i (formula order)", 1, 2 * n_naive * I * O,
             lambda: L.y_naive(xs, w, y[:n_naive]), check_small, rows_timed=(n_naive, N)),
        Rung("2", "y_rows: loops n, i, j (contiguous j)", 1, f, lambda: L.y_rows(x, w, y), check_y, "1"),
        Rung("3", "y_register: 4x4 block of x in registers", 1, f, lambda: L.y_register(x, w, y), check_y, "2"),
        Rung("4", "y_micro: micro-kernel, tile of y in regs", 1, f, lambda: L.y_micro(x, w, y, wide), check_y, "3"),
        Rung("5", "y_packed: + w packed in micro-panels", 1, f, lambda: L.y_packed(x, w, y, wide), check_y, "4"),
        Rung("6", f"y_blocked: five loops, {kc} x {mc} blocks", 1, f,
             lambda: L.y_blocked(x, w, y, mc, kc, wide), check_y, "5"),
        Rung("7", "y_parallel: prange over rows of y", T, f,
             lambda: L.y_parallel(x, w, y, mc, kc, T, wide), check_y, "6"),
        Rung("7+", "rung 7, then bias+ReLU in a second pass", T, f_relu, unfused, check_relu),
        Rung("8", "y_fused: bias+ReLU in the epilogue", T, f_relu,
             lambda: L.y_fused(x, w, b, y, mc, kc, T, wide), check_relu, "7+"),
        Rung("lg", "lingrad.linear(x, w)", T, f, lambda: lingrad.linear(x, w, out=y), check_y, "7"),
        Rung("lg", "lingrad.linear(x, w, b, relu=True)", T, f_relu,
             lambda: lingrad.linear(x, w, b, relu=True, out=y), check_relu, "8"),
        Rung("np", "numpy: x @ w", T, f, lambda: np.matmul(x, w, out=y), check_y, "7"),
        Rung("np", "numpy: np.maximum(x @ w + b, 0)", T, f_relu,
             lambda: np.maximum(np.add(np.matmul(x, w, out=y), b, out=y), 0, out=y), check_relu, "8"),
    ]


def input_grad_rungs(dy: np.ndarray, w: np.ndarray, y: np.ndarray, n_naive: int, T: int) -> List[Rung]:
    """The rows for dx = dy @ w.T (dy masked by the forward's ReLU output y > 0 in rung 8)."""
    N, O = dy.shape
    I = w.shape[0]
    mc, kc, wide = blocks("dx", I, O, dy.itemsize)
    dx, d = np.empty((N, I), dy.dtype), np.empty((N, O), dy.dtype)
    dys = dy[:n_naive]
    DY, W = dy.astype(np.float64), w.astype(np.float64)
    DM = np.where(y > 0, DY, 0)
    scale, scale_m = np.abs(DY) @ np.abs(W).T, np.abs(DM) @ np.abs(W).T
    check_dx = lambda: within_bound(dx, DY @ W.T, scale, O, dy.dtype)  # noqa: E731
    check_masked = lambda: within_bound(dx, DM @ W.T, scale_m, O, dy.dtype)  # noqa: E731
    check_small = lambda: within_bound(dx[:n_naive], DY[:n_naive] @ W.T, scale[:n_naive], O, dy.dtype)  # noqa: E731
    f = 2 * N * I * O

    def unfused() -> None:
        L.relu_mask(dy, y, d)
        L.dx_parallel(d, w, dx, mc, kc, T, wide)

    return [
        Rung("1", "dx_naive: loops n, i, j (formula order)", 1, 2 * n_naive * I * O,
             lambda: L.dx_naive(dys, w, dx[:n_naive]), check_small, rows_timed=(n_naive, N)),
        Rung("2", "dx_rows: loops n, j, i (contiguous i)", 1, f, lambda: L.dx_rows(dy, w, dx), check_dx, "1"),
        Rung("3", "dx_register: 4x4 block of dy in registers", 1, f,
             lambda: L.dx_register(dy, w, dx), check_dx, "2"),
        Rung("4", "dx_micro: micro-kernel, tile of dx in regs", 1, f,
             lambda: L.dx_micro(dy, w, dx, wide), check_dx, "3"),
        Rung("5", "dx_packed: + w.T packed in micro-panels", 1, f,
             lambda: L.dx_packed(dy, w, dx, wide), check_dx, "4"),
        Rung("6", f"dx_blocked: five loops, {kc} x {mc} blocks", 1, f,
             lambda: L.dx_blocked(dy, w, dx, mc, kc, wide), check_dx, "5"),
        Rung("7", "dx_parallel: prange over rows of dx", T, f,
             lambda: L.dx_parallel(dy, w, dx, mc, kc, T, wide), check_dx, "6"),
        Rung("7+", "mask dy by y > 0 in a pass, then rung 7", T, f, unfused, check_masked),
        Rung("8", "dx_fused: mask applied while dy is packed", T, f,
             lambda: L.dx_fused(dy, w, y, dx, mc, kc, T, wide), check_masked, "7+"),
        Rung("lg", "lingrad.input_grad(dy, w)", T, f, lambda: lingrad.input_grad(dy, w, out=dx),
             check_dx, "7"),
        Rung("lg", "lingrad.input_grad(dy, w, relu_out=y)", T, f,
             lambda: lingrad.input_grad(dy, w, relu_out=y, out=dx), check_masked, "8"),
        Rung("np", "numpy: dy @ w.T", T, f, lambda: np.matmul(dy, w.T, out=dx), check_dx, "7"),
        Rung("np", "numpy: np.where(y > 0, dy, 0) @ w.T", T, f,
             lambda: np.matmul(np.where(y > 0, dy, 0), w.T, out=dx), check_masked, "8"),
    ]


def layer_data(N: int, I: int, O: int, dtype: npt.DTypeLike,
               seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (N, I), w (I, O), b (O,), dy (N, O) and the forward's ReLU output y (rung 8 of dx
    masks dy by y > 0), random, of dtype."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, I)).astype(dtype)
    w = (r.standard_normal((I, O)) * np.sqrt(2 / I)).astype(dtype)
    b = r.standard_normal(O).astype(dtype)
    dy = r.standard_normal((N, O)).astype(dtype)
    return x, w, b, dy, np.maximum(x @ w + b, 0)


def product_rungs(product: str, data: Tuple[np.ndarray, ...], n_naive: int, T: int) -> List[Rung]:
    """The rows of one product's table ("dw", "forward" or "dx") on data = layer_data(...)."""
    x, w, b, dy, y = data
    if product == "dw":
        return weight_grad_rungs(x, dy, w, n_naive, T)
    if product == "forward":
        return forward_rungs(x, w, b, n_naive, T)
    return input_grad_rungs(dy, w, y, n_naive, T)


def showcase(product: str, steps: Sequence[Tuple[str, str, Tuple[int, int, int], str]],
             dtype: npt.DTypeLike, T: int, repeats: int) -> bool:
    """Time each step (rung before -> rung) on its own shape, both rungs checked first, and
    print the speedup; False if a check failed."""
    ok = True
    print("  steps that tie on the lesson's shape, timed where they pay:")
    for before, after, (N, I, O), why in steps:
        rungs = [r for r in product_rungs(product, layer_data(N, I, O, dtype), 1, T)
                 if r.label in (before, after)]
        for r in rungs:
            r.run()
            if not r.check():
                print(f"    MISMATCH: rung {r.label} ({r.what}) on {N}x{I}->{O} differs from numpy")
                ok = False
        t0, t1 = interleaved_min([r.run for r in rungs], repeats=repeats)
        print(f"    rung {before} -> {after} on {N}x{I}->{O}: {t0 / t1:.2f}x "
              f"({t0 * 1e3:.1f} -> {t1 * 1e3:.1f} ms; {why})")
    return ok


def warm(dtype: npt.DTypeLike, T: int) -> None:
    """Compile every rung once on tiny arrays (or load the on-disk cache), so no timing includes it."""
    data = layer_data(9, 6, 5, dtype, seed=1)
    for product in ("dw", "forward", "dx"):
        for rung in product_rungs(product, data, 9, T):
            rung.run()


def check_and_time(title: str, rungs: List[Rung], repeats: int) -> bool:
    """Check each rung's result, then time all of them interleaved; False if any check failed."""
    ok = True
    for rung in rungs:
        rung.run()
        if not rung.check():
            print(f"  MISMATCH: rung {rung.label} ({rung.what}) differs from numpy beyond rounding")
            ok = False
    for rung, seconds in zip(rungs, interleaved_min([r.run for r in rungs], repeats=repeats)):
        rung.seconds = seconds
    print_table(title, rungs)
    return ok


def print_table(title: str, rungs: Sequence[Rung]) -> None:
    by_label = {r.label: r for r in rungs}
    print(f"\n{title}")
    print(f"  {'rung':<4} {'kernel':<46} {'thr':>3} {'ms':>9} {'GFLOP/s':>8}  speedup")
    notes = []
    for r in rungs:
        ms, mark = r.seconds * 1e3, " "
        if r.rows_timed and r.rows_timed[0] < r.rows_timed[1]:
            timed, N = r.rows_timed
            ms, mark = ms * N / timed, "*"
            notes.append(f"  * rung {r.label} was timed on the first {timed} rows and its ms scaled by "
                         f"{N}/{timed}: an optimistic estimate where the subsample's strided columns "
                         f"fit in cache and the full batch's may not (see docs/ladder.md). "
                         f"--naive-n {N} times it in full.")
        step = ""
        if r.baseline is not None:
            step = f"{r.gflops / by_label[r.baseline].gflops:6.1f}x vs {r.baseline}"
        print(f"  {r.label:<4} {r.what:<46} {r.threads:>3} {ms:>8.1f}{mark} {r.gflops:>8.2f}  {step}")
    final = [r for r in rungs if r.label == "lg" and r.baseline == "8"]
    if final and "8" in by_label:
        ratio = final[0].seconds / by_label["8"].seconds
        print(f"  rung 8 runs at {ratio:.2f}x the speed of {final[0].what} "
              f"({'within' if ratio >= 0.9 else 'NOT within'} 10% of production, or faster)")
    if notes:
        print("\n".join(notes))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lingrad ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50000, help="batch size N (default 50000, the lesson's)")
    p.add_argument("--i", type=int, default=784, help="inputs I (default 784)")
    p.add_argument("--o", type=int, default=50, help="outputs O (default 50)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=lingrad.get_num_threads(),
                   help="threads for rungs 7-8, lingrad and numpy (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, min taken (default 3)")
    p.add_argument("--no-showcase", dest="showcase", action="store_false",
                   help="skip timing the steps that tie here on the shapes where they pay")
    p.add_argument("--naive-n", type=int, default=2000,
                   help="rows used to time rung 1 (default 2000; >= N times it in full)")
    a = p.parse_args(argv)
    if min(a.n, a.i, a.o, a.threads, a.repeats, a.naive_n) < 1:
        p.error("--n, --i, --o, --threads, --repeats and --naive-n must be positive")
    N, I, O, T = a.n, a.i, a.o, a.threads
    dt = np.dtype(a.dtype)
    data = layer_data(N, I, O, dt)
    n_naive = min(N, a.naive_n)
    print(f"optimisation ladder: x ({N}, {I}), w ({I}, {O}), dy ({N}, {O}), {a.dtype}; "
          f"rungs 1-6 on 1 thread, the rest on {T}; micro-kernel {K.MR} x {K.NV} vectors "
          f"of {K.VECTOR_BYTES} bytes")
    shapes = {op: blocks(op, I, O, dt.itemsize)[2] for op in ("dw", "forward", "dx")}
    print("rungs 4-8 on the wide block, " + f"{K.MR_WIDE} x {K.NV_WIDE} vectors (plan.register_block): "
          + (", ".join(op for op, wide in shapes.items() if wide) or "none"))
    titles = {"dw": "weight gradient  dw[i, j] = sum_n x[n, i] * dy[n, j]   "
                    "(rung 8 and '7+': + db)",
              "forward": "forward  y[n, j] = sum_i x[n, i] * w[i, j]   "
                         "(rung 8 and '7+': + b, then ReLU)",
              "dx": "input gradient  dx[n, i] = sum_j dy[n, j] * w[i, j]   (rung 8 and '7+': "
                    "dy masked by y > 0)"}
    ok = True
    with lingrad.num_threads(T), blas_threads(T):
        t0 = time.perf_counter()
        warm(dt, T)
        print(f"compiled or loaded from cache in {time.perf_counter() - t0:.1f} s (not in any timing)")
        for product, title in titles.items():
            ok &= check_and_time(title, product_rungs(product, data, n_naive, T), a.repeats)
            if a.showcase:
                ok &= showcase(product, SHOWCASE[product], dt, T, a.repeats)
    print(f"\nms: best of {a.repeats} interleaved repeats; speedup: GFLOP/s ratio to the rung named. "
          f"lg = lingrad's production kernel, np = numpy.")
    print("every result checked against numpy float64: ok" if ok else "SOME RESULTS DID NOT MATCH numpy")
    return 0 if ok else 1
